/**
 * @file support_checker.h
 * @brief The fire accounting shared by the scheduler failover test and
 *        tools/chaos (through tools/bench/tbdump): given what the
 *        scheduler emitted (runs), what was recorded (run-results), the
 *        fires a run was expected to have and, optionally, evidence of the
 *        processes the runs started, it says which fires were duplicated
 *        and which were lost.
 *
 * Only jansson and libc: no Criterion, no Kafka, so a program can use it
 * on dumped topics as well as a test on values it read itself.
 */
#ifndef TB_TEST_SUPPORT_CHECKER_H
#define TB_TEST_SUPPORT_CHECKER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/** What tbt_fires_check() found. Counts are of expected (task, nominal
 *  time) fires unless said otherwise. */
typedef struct tbt_fires_report {
        size_t tasks;          /**< tasks with expectations */
        size_t expected;       /**< expected fires */
        size_t fired;          /**< emitted exactly once as a run (attempt 1) */
        size_t skipped;        /**< recorded exactly once as a scheduler skip (misfire, paused) */
        size_t executed;       /**< a run of the fire started (only with starts) */
        size_t policy_skipped; /**< emitted, then skipped or expired by the executor's policy
                                    (SKIPPED_OVERLAP, EXPIRED): only with starts */
        size_t retried;        /**< fires that needed more than one attempt */
        size_t reexecuted;     /**< fires started by more than one attempt (a LOST run retried) */
        size_t misfires;       /**< runs emitted as misfire catch-ups */
        size_t runs_total;     /**< run records read (every task, every attempt) */
        size_t duplicated;     /**< fires emitted twice + run ids emitted, RUNNING or started twice */
        size_t lost;           /**< fires neither emitted nor skipped, or (with starts) emitted
                                    but never started nor skipped by policy */
        int64_t max_fire_lag_ms; /**< largest emitted_at - nominal_time of an expected fire */
        json_t *problems;      /**< array of strings, one per problem (at most 100 kept) */
} tbt_fires_report_t;

/**
 * @brief Account for every expected fire.
 * @param runs     array of RunRequest values (as decoded, read_committed)
 * @param results  array of RunResult values (as decoded, read_committed)
 * @param expect   object: task id -> array of nominal times (epoch ms)
 * @param starts   object: run id -> number of times its process started,
 *                 or NULL to check emission only (no executors involved)
 * @param rep      filled; free its problems with tbt_fires_report_clear()
 */
void tbt_fires_check(const json_t *runs, const json_t *results, const json_t *expect,
                     const json_t *starts, tbt_fires_report_t *rep);

/** @returns the report as a new JSON object (the caller owns it). */
json_t *tbt_fires_report_json(const tbt_fires_report_t *rep);

/** Release what the report holds. */
void tbt_fires_report_clear(tbt_fires_report_t *rep);

#endif
