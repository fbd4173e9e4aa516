/*
 * test_killsafe.c — long jobs survive kill -9. `starling slice`, `quantize`,
 * `elastify` and `train` run as child processes and are SIGKILLed at 12
 * points spread over each job: ST_KILL_AT=N makes the job raise a real SIGKILL
 * on itself at its Nth write / step / rename (src/util/killsafe.h), which hits
 * the same moments on every run, unlike a wall-clock timer. After each kill:
 *   - nothing partial exists under the final name (the target is absent, or
 *     complete and byte-identical to an uninterrupted run's);
 *   - the source checkpoint is untouched (sha256 of every file);
 *   - for train, the last step_N checkpoint loads, and resuming from it ends
 *     with a final checkpoint (weights and optimizer state) byte-identical to
 *     the uninterrupted run's;
 * and the next, unkilled run removes the stale temp dirs the kills left.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/synth.h"
#include "starling.h"
#include "util/util.h"
#include "util_test.h"

#define N_KILLS 12

/* Run the starling CLI with args (NULL-terminated); kill_at > 0 sets
 * ST_KILL_AT, count_file sets ST_KILL_COUNT. Returns the wait status. */
static int run_job(const char *const *args, long kill_at, const char *count_file) {
    fflush(stdout); /* else the child flushes our buffered output a second time */
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char at[32];
        snprintf(at, sizeof at, "%ld", kill_at);
        if (kill_at > 0) setenv("ST_KILL_AT", at, 1); else unsetenv("ST_KILL_AT");
        if (count_file) setenv("ST_KILL_COUNT", count_file, 1); else unsetenv("ST_KILL_COUNT");
        FILE *dn = freopen("/dev/null", "w", stdout);
        (void)dn;
        if (!getenv("ST_TEST_VERBOSE")) dn = freopen("/dev/null", "w", stderr);
        const char *argv[32];
        int n = 0;
        argv[n++] = starling_bin();
        for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
        argv[n] = NULL;
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) {}
    return st;
}

static long count_points(const char *const *args, const char *dir) {
    char f[700];
    snprintf(f, sizeof f, "%s/killpoints.txt", dir);
    int st = run_job(args, 0, f);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *s;
    assert_int_equal(st_read_file(f, &s, NULL), ST_OK);
    long n = strtol(s, NULL, 10);
    free(s);
    unlink(f);
    return n;
}

/* the i-th of N_KILLS kill points over 1..n: evenly spread, seeded jitter */
static long point(int i, long n, uint64_t *seed) {
    if (i == N_KILLS - 1) return n; /* the last one: after the final rename */
    long lo = 1 + (long)((double)i * (double)n / N_KILLS), hi = (long)((double)(i + 1) * (double)n / N_KILLS);
    if (hi < lo) hi = lo;
    return lo + (long)(st_splitmix64(seed) % (uint64_t)(hi - lo + 1));
}

/* sha256 of every file under dir, sorted by path ("" when dir is absent).
 * The CSV logs and their SVG plots are left out: they hold timings (tok/s). */
static char *digest(const char *dir) {
    char cmd[4000];
    snprintf(cmd, sizeof cmd, "[ -d '%s' ] && cd '%s' && find . -type f ! -name '*.csv' ! -name '*.svg' -print0 | sort -z | xargs -0 -r sha256sum", dir, dir);
    int st;
    return run_capture(cmd, &st);
}

static int exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* entries of dir that a kill left behind (NAME.tmp.PID, NAME.old.PID) */
static int stale_entries(const char *dir) {
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -c -E '\\.(tmp|old)\\.[0-9]+$'", dir);
    int st;
    char *out = run_capture(cmd, &st);
    int n = atoi(out);
    free(out);
    return n;
}

static void expect_killed(int st, long k, const char *what) {
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
        fail_msg("%s: kill point %ld: expected death by SIGKILL, got status %#x", what, k, st);
}

static char *make_source(const char *dir, st_dtype dt) {
    char *src = malloc(700);
    snprintf(src, 700, "%s/src", dir);
    st_synth_opts o;
    st_synth_preset("default", &o);
    o.dtype = dt;
    if (st_synth_write(src, &o)) fail_msg("synth: %s", st_last_error());
    return src;
}

/*
 * A job that writes one checkpoint directory `out`. mk_args fills the argument
 * list for a given output path. Half the kills run with --force over an
 * existing complete target: replacing must never leave a partial one either.
 */
typedef void (*args_fn)(const char *dir, const char *src, const char *out, int force, const char **args, char *buf);

static void kill_one_job(const char *tag, st_dtype dt, args_fn mk) {
    char *dir = test_tmpdir(tag);
    char *src = make_source(dir, dt);
    char *src_sum = digest(src);
    char ref[700], out[700], buf[4096];
    const char *args[24];
    snprintf(ref, sizeof ref, "%s/ref", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    mk(dir, src, ref, 0, args, buf);
    long n = count_points(args, dir);
    char *ref_sum = digest(ref);
    assert_true(strlen(ref_sum) > 0);
    printf("  %s: %ld kill points\n", tag, n);
    assert_true(n >= N_KILLS);
    uint64_t seed = 77;
    int absent = 0, complete = 0;
    for (int i = 0; i < N_KILLS; i++) {
        long k = point(i, n, &seed);
        int force = i % 2;
        if (!force) rm_rf(out); /* a target completed by an earlier kill after its rename */
        else if (!exists(out)) { /* a complete old target to replace */
            char cmd[1500];
            snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", ref, out);
            int st;
            free(run_capture(cmd, &st));
        }
        mk(dir, src, out, force, args, buf);
        expect_killed(run_job(args, k, NULL), k, tag);
        char *s = digest(out);
        if (!*s && force) fail_msg("%s: kill point %ld/%ld lost the target being replaced", tag, k, n);
        if (!*s) absent++;
        else if (!strcmp(s, ref_sum)) complete++;
        else fail_msg("%s: kill point %ld/%ld left a partial or different target:\n%s", tag, k, n, s);
        free(s);
        s = digest(src);
        if (strcmp(s, src_sum)) fail_msg("%s: kill point %ld changed the source", tag, k);
        free(s);
    }
    printf("  %s: after %d kills the target was absent %d times, complete %d times; %d stale temp entries\n", tag,
           N_KILLS, absent, complete, stale_entries(dir));
    assert_true(absent > 0);
    /* the next run succeeds and removes what the kills left */
    mk(dir, src, out, 1, args, buf);
    int st = run_job(args, 0, NULL);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *s = digest(out);
    assert_string_equal(s, ref_sum);
    free(s);
    assert_int_equal(stale_entries(dir), 0);
    free(src_sum); free(ref_sum); free(src);
    rm_rf(dir);
    free(dir);
}

/* args: pointers into buf; buf holds the strings */
static void push(const char **args, int *n, char **b, const char *s) {
    strcpy(*b, s);
    args[(*n)++] = *b;
    *b += strlen(s) + 1;
}

static void slice_args(const char *dir, const char *src, const char *out, int force, const char **args, char *buf) {
    int n = 0;
    const char *a[] = {"slice", "-s", src, "-t", out, "--size", "M", "-q", "--shard-size", "0.001"};
    for (size_t i = 0; i < sizeof a / sizeof *a; i++) push(args, &n, &buf, a[i]);
    if (force) push(args, &n, &buf, "--force");
    args[n] = NULL;
}

static void quant_args(const char *dir, const char *src, const char *out, int force, const char **args, char *buf) {
    int n = 0;
    const char *a[] = {"quantize", "-m", src, "-o", out, "--precision", "nvfp4", "-q", "--calib-tokens", "64"};
    for (size_t i = 0; i < sizeof a / sizeof *a; i++) push(args, &n, &buf, a[i]);
    if (force) push(args, &n, &buf, "--force");
    args[n] = NULL;
}

static void write_tokens(const char *path, int n, int vocab, uint64_t seed) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        uint32_t v = (st_splitmix64(&seed) >> 61) ? (uint32_t)((i * 7 + (i / 5) * 3) % 40 + 3)
                                                   : (uint32_t)(st_splitmix64(&seed) % (uint64_t)vocab);
        fwrite(&v, 4, 1, f);
    }
    fclose(f);
}

static void el_args(const char *dir, const char *src, const char *out, int force, const char **args, char *buf) {
    char p[800];
    snprintf(p, sizeof p, "%s/train.bin", dir);
    if (!exists(p)) {
        write_tokens(p, 4000, 272, 5);
        snprintf(p, sizeof p, "%s/val.bin", dir);
        write_tokens(p, 1000, 272, 6);
    }
    const char *base = strrchr(out, '/') + 1;
    snprintf(p, sizeof p, "%s/el_%s.json", dir, base);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"init\": \"src\", \"data\": {\"train\": \"train.bin\", \"val\": \"val.bin\"},\n"
            " \"budgets\": [{\"name\": \"L\", \"params\": 8.58e5}, {\"name\": \"S\", \"params\": 4.2e5}],\n"
            " \"choices\": {\"hidden_size\": [128, 96, 64], \"n_routed_experts\": [8, 4]},\n"
            " \"stages\": [{\"steps\": 6, \"seq\": 16}, {\"steps\": 6, \"seq\": 16, \"probs\": [0.7, 0.3]}],\n"
            " \"batch\": 2, \"lr\": 1e-3, \"warmup\": 2, \"router_lr\": 3e-2, \"eval_every\": 6, \"eval_batches\": 1,\n"
            " \"seed\": 3, \"out\": \"%s\"}\n", base);
    fclose(f);
    int n = 0;
    const char *a[] = {"elastify", "--config", p, "-q", "--threads", "1"};
    for (size_t i = 0; i < sizeof a / sizeof *a; i++) push(args, &n, &buf, a[i]);
    if (force) push(args, &n, &buf, "--force");
    args[n] = NULL;
}

static void test_slice_killed(void **s) { kill_one_job("kill_slice", ST_DT_BF16, slice_args); }
static void test_quantize_killed(void **s) { kill_one_job("kill_quant", ST_DT_BF16, quant_args); }
static void test_elastify_killed(void **s) { kill_one_job("kill_elastify", ST_DT_F32, el_args); }

/* ------------------------------------------------------------ train */

static void train_cfg(const char *dir, const char *out, char *path) {
    sprintf(path, "%s/train_%s.json", dir, out);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"model\": {\"vocab_size\":64,\"hidden_size\":32,\"hybrid_override_pattern\":\"M*E\","
            "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":8,"
            "\"mamba_num_heads\":4,\"mamba_head_dim\":8,\"ssm_state_size\":8,\"n_groups\":2,"
            "\"n_routed_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":16,"
            "\"moe_shared_expert_intermediate_size\":16,\"routed_scaling_factor\":2.5,\"norm_topk_prob\":true},"
            " \"data\": {\"train\": \"train.bin\", \"val\": \"val.bin\"},"
            " \"batch\": 2, \"seq\": 16, \"accum\": 2, \"steps\": 12, \"lr\": 3e-3, \"min_lr\": 3e-4, \"warmup\": 3,"
            " \"eval_every\": 4, \"eval_batches\": 1, \"ckpt_every\": 2, \"balance_rate\": 1e-3, \"seed\": 9,"
            " \"threads\": 1, \"out\": \"%s\"}\n", out);
    fclose(f);
}

static int last_step(const char *run, char *path) { /* path: 1200 bytes */
    int best = 0;
    for (int s = 2; s <= 12; s += 2) {
        char p[1200];
        snprintf(p, sizeof p, "%s/step_%06d", run, s);
        if (exists(p)) { best = s; strcpy(path, p); }
    }
    return best;
}

static void same_file(const char *a, const char *b, const char *what) {
    char *x, *y;
    size_t nx, ny;
    if (st_read_file(a, &x, &nx)) fail_msg("%s: %s", what, st_last_error());
    if (st_read_file(b, &y, &ny)) fail_msg("%s: %s", what, st_last_error());
    if (nx != ny || memcmp(x, y, nx)) fail_msg("%s: %s differs from %s", what, a, b);
    free(x); free(y);
}

static void test_train_killed(void **s) {
    char *dir = test_tmpdir("kill_train");
    char p[1200], cfg_ref[800], cfg_run[800], run[800];
    snprintf(p, sizeof p, "%s/train.bin", dir); write_tokens(p, 3000, 64, 1);
    snprintf(p, sizeof p, "%s/val.bin", dir); write_tokens(p, 800, 64, 2);
    train_cfg(dir, "ref", cfg_ref);
    train_cfg(dir, "run", cfg_run);
    snprintf(run, sizeof run, "%s/run", dir);
    const char *ref_args[] = {"train", "--config", cfg_ref, NULL};
    long n = count_points(ref_args, dir);
    printf("  train: %ld kill points\n", n);
    assert_true(n >= N_KILLS);
    uint64_t seed = 91;
    for (int i = 0; i < N_KILLS; i++) {
        long k = point(i, n, &seed);
        rm_rf(run);
        const char *args[] = {"train", "--config", cfg_run, NULL};
        expect_killed(run_job(args, k, NULL), k, "train");
        /* a final checkpoint, if there, is complete */
        snprintf(p, sizeof p, "%s/final", run);
        if (exists(p)) {
            char *a = digest(p), *b;
            snprintf(p, sizeof p, "%s/ref/final", dir);
            b = digest(p);
            if (strcmp(a, b)) fail_msg("train: kill point %ld left a different final checkpoint", k);
            free(a); free(b);
        }
        char ck[1200];
        int step = last_step(run, ck);
        if (step) { /* the last checkpoint loads */
            st_model *m;
            if (st_model_load(ck, &m)) fail_msg("train: kill point %ld: %s does not load: %s", k, ck, st_last_error());
            st_model_free(m);
        }
        int stale = stale_entries(run);
        /* resume (or start over when no checkpoint was written) */
        const char *rargs[] = {"train", "--config", cfg_run, step ? "--resume" : NULL, ck, NULL};
        int st = run_job(rargs, 0, NULL);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) fail_msg("train: resume after kill point %ld failed", k);
        printf("  train: killed at point %3ld/%ld, last checkpoint step %2d, %d stale temp entries, resumed\n", k, n,
               step, stale);
        char a[900], b[900];
        snprintf(a, sizeof a, "%s/final/model.safetensors", run);
        snprintf(b, sizeof b, "%s/ref/final/model.safetensors", dir);
        same_file(a, b, "train resume: weights");
        snprintf(a, sizeof a, "%s/final/optimizer.safetensors", run);
        snprintf(b, sizeof b, "%s/ref/final/optimizer.safetensors", dir);
        same_file(a, b, "train resume: optimizer state");
        assert_int_equal(stale_entries(run), 0);
    }
    rm_rf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slice_killed), cmocka_unit_test(test_quantize_killed),
        cmocka_unit_test(test_elastify_killed), cmocka_unit_test(test_train_killed),
    };
    return cmocka_run_group_tests_name("killsafe", tests, NULL, NULL);
}
