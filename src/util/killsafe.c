/* killsafe.c — see killsafe.h. */
#include "util/killsafe.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static long g_kill_at = -1; /* -1: not read yet; 0: off */
static long g_calls;
static const char *g_count_file;

static void write_count(void) {
    FILE *f = fopen(g_count_file, "w");
    if (f) { fprintf(f, "%ld\n", __atomic_load_n(&g_calls, __ATOMIC_RELAXED)); fclose(f); }
}

static void init_once(void) {
    const char *a = getenv("ST_KILL_AT"), *c = getenv("ST_KILL_COUNT");
    long at = a ? strtol(a, NULL, 10) : 0;
    if (c && *c) { g_count_file = c; atexit(write_count); if (at <= 0) at = -2; }
    __atomic_store_n(&g_kill_at, at > 0 || at == -2 ? at : 0, __ATOMIC_RELAXED);
}

void st_killpoint(void) {
    long at = __atomic_load_n(&g_kill_at, __ATOMIC_RELAXED);
    if (at == 0) return;
    if (at == -1) {
        init_once();
        at = g_kill_at;
        if (at == 0) return;
    }
    long n = __atomic_add_fetch(&g_calls, 1, __ATOMIC_RELAXED);
    if (n == at) raise(SIGKILL);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* "NAME.tmp.PID" / "NAME.old.PID" → PID of a process that is gone, else 0 */
static long stale_pid(const char *ent, const char *name) {
    const char *tag = NULL;
    if (name) {
        size_t k = strlen(name);
        if (strncmp(ent, name, k)) return 0;
        tag = ent + k;
        if (strncmp(tag, ".tmp.", 5) && strncmp(tag, ".old.", 5)) return 0;
    } else { /* the last ".tmp." / ".old.": NAME itself may contain dots */
        for (const char *q = ent + 1; *q; q++)
            if (!strncmp(q, ".tmp.", 5) || !strncmp(q, ".old.", 5)) tag = q;
        if (!tag) return 0;
    }
    const char *d = tag + 5;
    if (!*d) return 0;
    char *end;
    long pid = strtol(d, &end, 10);
    if (*end || pid <= 0) return 0;
    /* gone: ESRCH. Our own pid cannot own it yet (we have not made it): stale
       from an earlier process that had the same pid. */
    if (pid == (long)getpid()) return pid;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH ? pid : 0;
}

int st_clean_stale(const char *dir, const char *name) {
    DIR *d = opendir(dir && *dir ? dir : ".");
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) continue;
        if (!stale_pid(e->d_name, name)) continue;
        if (snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : ".", e->d_name) >= (int)sizeof path) continue;
        if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0) removed++;
    }
    closedir(d);
    return removed;
}
