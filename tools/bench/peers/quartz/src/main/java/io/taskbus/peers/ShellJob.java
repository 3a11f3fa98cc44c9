package io.taskbus.peers;

import java.io.IOException;
import java.util.concurrent.atomic.AtomicInteger;
import org.quartz.Job;
import org.quartz.JobExecutionContext;
import org.quartz.JobExecutionException;

/**
 * One shell job: `sh -c CMD` (CMD from the job data), waited for, as a Quartz user's
 * job that starts a program would. The command itself records its start time.
 */
public final class ShellJob implements Job {
    static final AtomicInteger DONE = new AtomicInteger();
    static final AtomicInteger FAILED = new AtomicInteger();

    @Override
    public void execute(JobExecutionContext ctx) throws JobExecutionException {
        String cmd = ctx.getMergedJobDataMap().getString("cmd");
        try {
            Process p = new ProcessBuilder("sh", "-c", cmd)
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .redirectOutput(ProcessBuilder.Redirect.DISCARD)
                .redirectError(ProcessBuilder.Redirect.INHERIT)
                .start();
            int rc = p.waitFor();
            if (rc != 0) {
                FAILED.incrementAndGet();
            }
        } catch (IOException e) {
            FAILED.incrementAndGet();
            throw new JobExecutionException("sh -c could not start: " + e.getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            FAILED.incrementAndGet();
        } finally {
            DONE.incrementAndGet();
        }
    }
}
