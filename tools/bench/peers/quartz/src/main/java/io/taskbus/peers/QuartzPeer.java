package io.taskbus.peers;

import java.util.ArrayList;
import java.util.Date;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import org.quartz.JobBuilder;
import org.quartz.JobDetail;
import org.quartz.Scheduler;
import org.quartz.SimpleScheduleBuilder;
import org.quartz.Trigger;
import org.quartz.TriggerBuilder;
import org.quartz.impl.StdSchedulerFactory;

/**
 * The Quartz peer of `tools/bench/run peers`.
 *
 *   java -cp 'libs/*:taskbus-peer-quartz-1.jar' io.taskbus.peers.QuartzPeer \
 *       --url jdbc:postgresql://127.0.0.1:5432/quartz --out starts.txt --at EPOCH_MS \
 *       (--jobs N | --rate R --seconds S) [--threads T] [--timeout SECONDS]
 *
 * Schedules N one-shot jobs due at EPOCH_MS (or R jobs due at each of S whole seconds from
 * EPOCH_MS: a steady R fires/s), all in one transaction, on Quartz's clustered JDBC job
 * store (JobStoreTX, PostgreSQLDelegate, isClustered=true; tables of tables_postgres.sql
 * already there), then starts the scheduler. Job i runs
 *   sh -c 'echo i NOMINAL_MS $(date +%s%N) >> OUT'
 * Exits 0 when every job has run, 2 when the timeout (after the last due instant) passed
 * first, 3 when scheduling ended after the first due instant (the lag would include it).
 */
public final class QuartzPeer {
    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            if (!argv[i].startsWith("--")) {
                die(64, "unexpected argument " + argv[i] + ": options are --name value pairs");
            }
            a.put(argv[i].substring(2), argv[i + 1]);
        }
        String url = need(a, "url"), out = need(a, "out");
        long at = Long.parseLong(need(a, "at"));
        int threads = Integer.parseInt(a.getOrDefault("threads", "50"));
        long timeoutMs = Long.parseLong(a.getOrDefault("timeout", "120")) * 1000;
        List<long[]> groups = new ArrayList<>();   // {nominal ms, jobs}
        if (a.containsKey("jobs")) {
            groups.add(new long[] {at, Integer.parseInt(a.get("jobs"))});
        } else {
            int rate = Integer.parseInt(need(a, "rate")), secs = Integer.parseInt(need(a, "seconds"));
            for (int s = 0; s < secs; s++) {
                groups.add(new long[] {at + s * 1000L, rate});
            }
        }

        Properties p = new Properties();
        p.setProperty("org.quartz.scheduler.instanceName", "taskbus-peers");
        p.setProperty("org.quartz.scheduler.instanceId", "AUTO");
        p.setProperty("org.quartz.scheduler.skipUpdateCheck", "true");
        // Quartz's tuning for many triggers due together: acquire up to a thread pool's
        // worth per lock round trip instead of one.
        p.setProperty("org.quartz.scheduler.batchTriggerAcquisitionMaxCount", String.valueOf(threads));
        p.setProperty("org.quartz.threadPool.class", "org.quartz.simpl.SimpleThreadPool");
        p.setProperty("org.quartz.threadPool.threadCount", String.valueOf(threads));
        p.setProperty("org.quartz.jobStore.class", "org.quartz.impl.jdbcjobstore.JobStoreTX");
        p.setProperty("org.quartz.jobStore.driverDelegateClass", "org.quartz.impl.jdbcjobstore.PostgreSQLDelegate");
        p.setProperty("org.quartz.jobStore.isClustered", "true");
        p.setProperty("org.quartz.jobStore.clusterCheckinInterval", "5000");
        p.setProperty("org.quartz.jobStore.acquireTriggersWithinLock", "true");
        p.setProperty("org.quartz.jobStore.misfireThreshold", "600000");
        p.setProperty("org.quartz.jobStore.dataSource", "ds");
        p.setProperty("org.quartz.dataSource.ds.connectionProvider.class", HikariProvider.class.getName());
        p.setProperty("org.quartz.dataSource.ds.url", url);
        p.setProperty("org.quartz.dataSource.ds.user", a.getOrDefault("user", "taskbus"));
        p.setProperty("org.quartz.dataSource.ds.maxConnections", String.valueOf(threads + 5));

        Scheduler sched = new StdSchedulerFactory(p).getScheduler();
        sched.clear();
        Map<JobDetail, Set<? extends Trigger>> jobs = new HashMap<>();
        int n = 0;
        for (long[] g : groups) {
            for (int k = 0; k < g[1]; k++, n++) {
                String cmd = "echo " + n + " " + g[0] + " $(date +%s%N) >> '" + out + "'";
                JobDetail jd = JobBuilder.newJob(ShellJob.class).withIdentity("job-" + n, "peers")
                    .usingJobData("cmd", cmd).build();
                Trigger t = TriggerBuilder.newTrigger().withIdentity("trigger-" + n, "peers")
                    .startAt(new Date(g[0]))
                    .withSchedule(SimpleScheduleBuilder.simpleSchedule().withMisfireHandlingInstructionFireNow())
                    .build();
                jobs.put(jd, Set.of(t));
            }
        }
        sched.scheduleJobs(jobs, true);
        long scheduled = System.currentTimeMillis();
        System.err.printf("quartz: %d jobs scheduled (first due in %d ms), %d threads%n", n, at - scheduled, threads);
        if (scheduled > at) {
            sched.shutdown(false);
            die(3, "scheduling the jobs ended " + (scheduled - at) + " ms after their due instant: give more time (--at)");
        }
        sched.start();
        long deadline = groups.get(groups.size() - 1)[0] + timeoutMs;
        while (ShellJob.DONE.get() < n && System.currentTimeMillis() < deadline) {
            Thread.sleep(50);
        }
        int done = ShellJob.DONE.get(), failed = ShellJob.FAILED.get();
        // Wait for the job threads' own bookkeeping (each completed trigger's delete) before
        // the pool closes under them.
        sched.shutdown(done >= n);
        System.err.printf("quartz: %d of %d jobs ran, %d failed%n", done, n, failed);
        if (done < n) {
            die(2, "only " + done + " of " + n + " jobs ran within " + timeoutMs / 1000 + " s of the last due instant");
        }
        System.exit(failed > 0 ? 4 : 0);
    }

    private static String need(Map<String, String> a, String k) {
        String v = a.get(k);
        if (v == null) {
            die(64, "--" + k + " is required");
        }
        return v;
    }

    private static void die(int code, String msg) {
        System.err.println("quartz-peer: " + msg);
        System.exit(code);
    }
}
