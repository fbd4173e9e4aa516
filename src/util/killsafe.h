/*
 * killsafe.h — surviving kill -9. Output is always written under a temporary
 * name NAME.tmp.PID (or NAME.old.PID) and renamed into place; a SIGKILL leaves
 * those behind, and the next run removes them (st_clean_stale). st_killpoint
 * is the test hook that lets a test SIGKILL a job at exactly its Nth write or
 * step, deterministically, instead of guessing with wall-clock timers.
 */
#ifndef ST_KILLSAFE_H
#define ST_KILLSAFE_H

/* With ST_KILL_AT=N in the environment, the Nth call (1-based, counted over the
 * whole process) raises SIGKILL. With ST_KILL_COUNT=FILE, the number of calls
 * made is written to FILE at exit (so a test can spread its kill points over a
 * job). Without either, a call costs one load and a branch. */
void st_killpoint(void);

/* Remove the entries of dir named NAME.tmp.PID or NAME.old.PID whose process
 * PID no longer runs (left by a killed run). name NULL matches any NAME: only
 * for directories the job owns (a training output directory). Best effort:
 * what cannot be removed stays. Returns how many entries were removed. */
int st_clean_stale(const char *dir, const char *name);
#endif
