/*
 * bench.c — `starling bench`: the machine's read bandwidth, then for each
 * budget prefill and decode speed on one checkpoint, and how close decode
 * comes to the bandwidth roofline (docs/PERF.md: decode streams every active
 * weight once per token, so bytes/token × tok/s ≤ read bandwidth).
 *
 *   prefill   one batched st_forward of --prompt tokens (after a warm-up run)
 *   decode    --gen single-token steps after that prompt, logits and a sample
 *   GB/s      active bytes per decoded token (st_budget_stats) × decode tok/s
 *   mm GF/s   matmul FLOPs of one prefill / its matmul wall time (st_prof)
 *
 * Each figure is the best of --reps runs, taken in rounds (every budget
 * once per round). Token ids are random but fixed.
 * With --gen-model DIR the --preset synth checkpoint is written to DIR
 * first unless DIR/config.json already exists. A last, profiled run of each
 * budget gives the time of one token by op class (st_prof, kernels.h).
 */
#include "util/util.h"
#include "cli.h"
#include "model/synth.h"
#include "train/train.h"
#include "util/plot.h"

#include <getopt.h>
#include <math.h>
#include <jansson.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_BUDGETS 16

static void usage(FILE *f) {
    fprintf(f,
            "usage: starling bench (-m DIR [-m DIR ...] | --gen-model DIR [--preset P]) [options]\n\n"
            "Measure the machine's limits (read bandwidth, fp32 FMA and GEMM peaks), then prefill and\n"
            "decode speed of every budget of every model: bytes read per token and the fraction of\n"
            "the bandwidth decode reaches, matmul GFLOP/s of prefill against the peaks, and where the\n"
            "time of one decoded token goes (matmul, sync, Mamba, attention, MoE routing, norms,\n"
            "sampling, other).\n\n"
            "  -m, --model DIR        benchmark a checkpoint; repeat to compare formats of one model\n"
            "                         (e.g. the BF16, FP8 and NVFP4 copies): up to 4\n"
            "      --gen-model DIR    use DIR, first writing the --preset synth checkpoint there if\n"
            "                         DIR/config.json does not exist\n"
            "      --preset P         synth preset for --gen-model: bench (~1 GB, default), nano8\n"
            "                         (the real Nemotron-3-Nano widths, 2.75 GB), default, big\n"
            "  -b, --budgets LIST     budgets, comma-separated (default \"full,S\"); explicit widths\n"
            "                         join the spec before them: \"full,hidden_size=768,moe_ffn=512\";\n"
            "                         ';' also separates specs\n"
            "      --budget SPEC      add one budget spec verbatim (repeatable)\n"
            "  -t, --threads N        threads (default 2, at most the core count; 0 = all cores)\n"
            "      --prompt N         prefill length in tokens (default 256)\n"
            "      --gen N            decoded tokens per run (default 64)\n"
            "      --reps N           runs per figure, best kept (default 3)\n"
            "      --bw-mib N         bandwidth buffer in MiB (default 4x the last-level cache,\n"
            "                         at least 1024)\n"
            "      --json FILE        also write the results as JSON\n"
            "      --svg FILE         plot decode tok/s against MB per token, with the roofline (and,\n"
            "                         with --batch, FILE-batch.svg: aggregate tok/s per batch size;\n"
            "                         with --verify, FILE-verify.svg: a k-token pass's relative cost)\n"
            "      --batch LIST       also decode LIST (e.g. 1,2,4,8) sequences at once through one\n"
            "                         batched forward pass: aggregate tok/s and bytes per step\n"
            "      --verify K         also time one forward of 1..K tokens (speculative verification)\n"
            "                         and the speedup it predicts for a free drafter\n"
            "  -h, --help             this help\n\n"
            "Bandwidth is measured before every budget and at the end; ratios use the best value.\n");
}

static const char *human(double v, char *buf, size_t n) {
    if (v >= 1e9) snprintf(buf, n, "%.2fB", v / 1e9);
    else if (v >= 1e6) snprintf(buf, n, "%.1fM", v / 1e6);
    else if (v >= 1e3) snprintf(buf, n, "%.1fK", v / 1e3);
    else snprintf(buf, n, "%.0f", v);
    return buf;
}

/* Split LIST into budget specs: ';' always separates; ',' separates except
 * between key=value items, which stay with the spec they continue. */
static int split_budgets(const char *list, char **out, int n, int cap) {
    char *s = strdup(list), *save = NULL;
    if (!s) return -1;
    for (char *grp = strtok_r(s, ";", &save); grp; grp = strtok_r(NULL, ";", &save)) {
        char *save2 = NULL;
        int prev_kv = 0;
        for (char *tok = strtok_r(grp, ",", &save2); tok; tok = strtok_r(NULL, ",", &save2)) {
            while (*tok == ' ') tok++;
            if (!*tok) continue;
            const char *eq = strchr(tok, '='), *colon = strchr(tok, ':');
            int kv = eq != NULL, plain_kv = kv && !(colon && colon < eq) && tok[0] != '@';
            if (plain_kv && prev_kv && n > 0) {
                size_t a = strlen(out[n - 1]), b = strlen(tok);
                char *j = realloc(out[n - 1], a + b + 2);
                if (!j) { free(s); return -1; }
                j[a] = ',';
                memcpy(j + a + 1, tok, b + 1);
                out[n - 1] = j;
            } else {
                if (n >= cap) { free(s); return -2; }
                out[n++] = strdup(tok);
            }
            prev_kv = kv && tok[0] != '@';
        }
    }
    free(s);
    return n;
}

typedef struct {
    char *spec;
    st_budget *b;
    char name[64];
    st_budget_stats st;
    double prefill_tps, decode_tps, prefill_s[64], decode_s[64];
    int model;                        /* index of its checkpoint (-m order) */
    char label[32];                   /* budget name, or customN for explicit widths */
    double bw;                        /* bandwidth measured just before this budget */
    st_prof dec, pre;                 /* one profiled run: seconds per op class, per token */
    double dec_total, pre_total;      /* and its wall time per decoded / prefilled token */
} result;

/* Which NVFP4 decode kernel runs (ST_VNNI=0 / ST_BF16DP=0 switch them off). */
static const char *nvfp4_kernel(void) {
    if (st_isa_vnni()) return "int8 dot products (AVX512_VNNI)";
    if (st_isa_bf16()) return "bf16 dot products, one token (AVX512_BF16)";
    return st_isa_get() == ST_ISA_SCALAR ? "scalar" : "fp32";
}

/* Size of the bandwidth buffer: 4x the LLC, at least 1 GiB, at most a quarter of RAM. */
static size_t bw_bytes_default(void) {
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0) llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
    size_t b = llc > 0 ? 4 * (size_t)llc : 0;
    if (b < ((size_t)1 << 30)) b = (size_t)1 << 30;
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psz > 0) {
        size_t quarter = (size_t)pages * (size_t)psz / 4;
        if (b > quarter) b = quarter;
    }
    return b;
}

static int gen_model(const char *dir, const char *preset) {
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    struct stat sb;
    if (stat(p, &sb) == 0) return 0;
    st_synth_opts o;
    if (st_synth_preset(preset, &o)) return cli_fail("bench", "no '%s' synth preset", preset);
    fprintf(stderr, "bench: generating the '%s' checkpoint in %s (BF16, pattern %s, hidden %d) ...\n", preset, dir,
            o.pattern, o.hidden);
    double t0 = st_time_now();
    st_status rc = st_synth_write(dir, &o);
    if (rc) return cli_fail_st("bench", rc);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    double gb = stat(p, &sb) == 0 ? (double)sb.st_size / 1e9 : 0;
    fprintf(stderr, "bench: wrote %s (%.2f GB) in %.1f s\n", p, gb, st_time_now() - t0);
    return 0;
}

/* Per-token op-class seconds of prof over n tokens, and "other" = the wall
 * time no class claimed (embedding, residual adds, activations, bookkeeping). */
static void prof_per_token(st_prof *p, double wall, int n) {
    double claimed = 0;
    for (int k = 0; k < ST_PROF_N; k++)
        if (k != ST_PROF_OTHER) claimed += p->s[k];
    p->s[ST_PROF_OTHER] = wall > claimed ? wall - claimed : 0;
    for (int k = 0; k < ST_PROF_N; k++) p->s[k] /= n;
}

/* Decode gen tokens after the prompt: a forward of one token, then a sample
 * from its logits (temperature 0.8, top-p 0.95: the full-vocabulary softmax
 * a chat request pays). The fed tokens stay the fixed random ones, so every
 * budget and run does the same work. */
static st_status decode_run(const st_budget *b, st_state *s, st_sampler *smp, const int32_t *tok, int gen,
                            float *logits, st_prof *prof) {
    st_status rc = ST_OK;
    for (int i = 0; !rc && i < gen; i++) {
        rc = st_forward(b, s, tok + i, 1, logits, 0);
        double t0 = st_time_now();
        if (!rc) (void)st_sample(smp, logits);
        if (prof) prof->s[ST_PROF_SAMPLE] += st_time_now() - t0;
    }
    return rc;
}

/* One budget's run state: its sequence state, sampler, tokens and logits. */
typedef struct {
    st_state *s;
    st_sampler *smp;
    int32_t *tok;
    float *logits;
} brun;

static void brun_close(brun *br) {
    free(br->tok);
    free(br->logits);
    st_state_free(br->s);
    st_sampler_free(br->smp);
    memset(br, 0, sizeof *br);
}

/* Set up one budget and warm it up: a full prefill touches every weight
 * (page faults, caches), then a few decode steps. */
static int brun_open(st_model *m, result *r, brun *br, int prompt, int gen, uint64_t seed) {
    const st_config *c = st_model_config(m);
    st_sampler_params sp = st_sampler_default_params();
    sp.temperature = 0.8f;
    sp.top_p = 0.95f;
    sp.seed = seed;
    memset(br, 0, sizeof *br);
    st_status rc = st_state_new(m, prompt + gen + 8, &br->s);
    if (!rc) rc = st_sampler_new(&sp, c->vocab_size, &br->smp);
    if (rc) { brun_close(br); return cli_fail_st("bench", rc); }
    br->tok = malloc(sizeof(int32_t) * (size_t)(prompt + gen + 8));
    br->logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    if (!br->tok || !br->logits) { brun_close(br); return cli_fail("bench", "out of memory"); }
    for (int i = 0; i < prompt + gen + 8; i++) br->tok[i] = (int32_t)(st_splitmix64(&seed) % (uint64_t)c->vocab_size);
    r->prefill_tps = r->decode_tps = 0;
    rc = st_forward(r->b, br->s, br->tok, prompt, br->logits, 0);
    if (!rc) rc = decode_run(r->b, br->s, br->smp, br->tok + prompt, 4, br->logits, NULL);
    if (rc) { brun_close(br); return cli_fail_st("bench", rc); }
    return 0;
}

/* Timed run number rep: reset, prefill, decode; the best so far kept. */
static int brun_rep(result *r, brun *br, int rep, int prompt, int gen) {
    st_state_reset(br->s);
    double t0 = st_time_now();
    st_status rc = st_forward(r->b, br->s, br->tok, prompt, br->logits, 0);
    double t1 = st_time_now();
    if (!rc) rc = decode_run(r->b, br->s, br->smp, br->tok + prompt, gen, br->logits, NULL);
    double t2 = st_time_now();
    if (rc) return cli_fail_st("bench", rc);
    r->prefill_s[rep] = t1 - t0;
    r->decode_s[rep] = t2 - t1;
    if (prompt / (t1 - t0) > r->prefill_tps) r->prefill_tps = prompt / (t1 - t0);
    if (gen / (t2 - t1) > r->decode_tps) r->decode_tps = gen / (t2 - t1);
    return 0;
}

/* One profiled run for the breakdown (kept apart: the clock reads cost a little). */
static int brun_profile(result *r, brun *br, int prompt, int gen) {
    memset(&r->pre, 0, sizeof r->pre);
    memset(&r->dec, 0, sizeof r->dec);
    st_state_reset(br->s);
    st_prof_attach(&r->pre);
    double t0 = st_time_now();
    st_status rc = st_forward(r->b, br->s, br->tok, prompt, br->logits, 0);
    double t1 = st_time_now();
    st_prof_attach(&r->dec);
    if (!rc) rc = decode_run(r->b, br->s, br->smp, br->tok + prompt, gen, br->logits, &r->dec);
    double t2 = st_time_now();
    st_prof_attach(NULL);
    if (rc) return cli_fail_st("bench", rc);
    r->pre_total = (t1 - t0) / prompt;
    r->dec_total = (t2 - t1) / gen;
    prof_per_token(&r->pre, t1 - t0, prompt);
    prof_per_token(&r->dec, t2 - t1, gen);
    return 0;
}

/* --batch: B sequences decoding together through st_forward_batch, each
 * after its own --prompt tokens; aggregate tok/s of the gen steps (each with
 * B logits rows and B samples), best of reps, and the weight bytes one step
 * reads (measured by the profile: the union of the experts the B rows chose). */
typedef struct {
    int model, budget, B;
    double step_s, tok_s, bytes;
} bresult;

static int run_batch(st_model *m, const st_budget *b, int B, int prompt, int gen, int reps, uint64_t seed,
                     bresult *out) {
    const st_config *c = st_model_config(m);
    const size_t V = (size_t)c->vocab_size;
    st_state *s[64] = {0};
    st_sampler *smp = NULL;
    st_sampler_params sp = st_sampler_default_params();
    sp.temperature = 0.8f;
    sp.top_p = 0.95f;
    sp.seed = seed;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)B * (size_t)(prompt + gen));
    float *logits = malloc(sizeof(float) * (size_t)B * V);
    st_status rc = tok && logits ? st_sampler_new(&sp, c->vocab_size, &smp) : ST_ERR_NOMEM;
    for (int q = 0; !rc && q < B; q++) rc = st_state_new(m, prompt + gen + 8, &s[q]);
    for (int i = 0; !rc && i < B * (prompt + gen); i++) tok[i] = (int32_t)(st_splitmix64(&seed) % V);
    out->tok_s = 0;
    st_prof prof;
    for (int rep = 0; !rc && rep <= reps + 1; rep++) { /* 0 warms up, 1..reps timed, then one profiled */
        for (int q = 0; !rc && q < B; q++) {
            st_state_reset(s[q]);
            rc = st_forward(b, s[q], tok + (size_t)q * (prompt + gen), prompt, NULL, 0);
        }
        const int profiled = rep == reps + 1;
        if (profiled) { memset(&prof, 0, sizeof prof); st_prof_attach(&prof); }
        double t0 = st_time_now();
        for (int i = 0; !rc && i < gen; i++) {
            st_batch_item it[64];
            for (int q = 0; q < B; q++)
                it[q] = (st_batch_item){s[q], tok + (size_t)q * (prompt + gen) + prompt + i, 1, logits + q * V, 0};
            rc = st_forward_batch(b, it, B);
            for (int q = 0; !rc && q < B; q++) (void)st_sample(smp, logits + q * V);
        }
        double dt = st_time_now() - t0;
        st_prof_attach(NULL);
        if (profiled) out->bytes = prof.bytes / gen;
        else if (rep && B * gen / dt > out->tok_s) { out->tok_s = B * gen / dt; out->step_s = dt / gen; }
    }
    for (int q = 0; q < B; q++) st_state_free(s[q]);
    st_sampler_free(smp);
    free(tok);
    free(logits);
    return rc ? cli_fail_st("bench", rc) : 0;
}

/* --verify K: the cost of one forward of k = 1..K tokens after the prompt
 * (what verifying k-1 drafted tokens costs), best of reps, from a copy of the
 * same state each time. */
static int run_verify(st_model *m, const st_budget *b, int K, int prompt, int reps, uint64_t seed, double *sec) {
    const st_config *c = st_model_config(m);
    st_state *base = NULL, *s = NULL;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(prompt + K));
    float *logits = malloc(sizeof(float) * (size_t)c->vocab_size * (size_t)K);
    st_status rc = tok && logits ? st_state_new(m, prompt + K + 8, &base) : ST_ERR_NOMEM;
    if (!rc) rc = st_state_new(m, prompt + K + 8, &s);
    for (int i = 0; !rc && i < prompt + K; i++) tok[i] = (int32_t)(st_splitmix64(&seed) % (uint64_t)c->vocab_size);
    if (!rc) rc = st_forward(b, base, tok, prompt, NULL, 0);
    for (int k = 1; !rc && k <= K; k++) {
        sec[k] = 1e30;
        for (int r = 0; !rc && r <= reps; r++) {
            rc = st_state_copy(s, base);
            double t0 = st_time_now();
            if (!rc) rc = st_forward(b, s, tok + prompt, k, logits, 1);
            double dt = st_time_now() - t0;
            if (r && dt < sec[k]) sec[k] = dt; /* run 0 warms up */
        }
    }
    st_state_free(base);
    st_state_free(s);
    free(tok);
    free(logits);
    return rc ? cli_fail_st("bench", rc) : 0;
}

static json_t *prof_json(const st_prof *p) {
    json_t *o = json_object();
    for (int k = 0; k < ST_PROF_N; k++) json_object_set_new(o, st_prof_name((st_prof_class)k), json_real(1e3 * p->s[k]));
    return o;
}

static int write_json(const char *path, const char *const *dirs, const char *const *mlabel, int n_dirs, int threads,
                      double bw, double bw_min, double fma, double gemm, size_t bw_bytes, int prompt, int gen,
                      int reps, const result *res, int n) {
    json_t *bl = json_array();
    for (int i = 0; i < n; i++) {
        const result *r = &res[i];
        json_t *pf = json_array(), *dc = json_array();
        for (int k = 0; k < reps; k++) {
            json_array_append_new(pf, json_real(r->prefill_s[k]));
            json_array_append_new(dc, json_real(r->decode_s[k]));
        }
        double gbs = r->st.active_bytes * r->decode_tps / 1e9;
        double mm_s = (r->pre.s[ST_PROF_MATMUL] + r->pre.s[ST_PROF_SYNC]) * prompt;
        double mgf = mm_s > 0 ? r->pre.flops / mm_s / 1e9 : 0;
        json_t *o = json_pack("{s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:o, s:o}", "spec", r->spec,
                              "name", r->name, "total_params", r->st.total_params, "active_params",
                              r->st.active_params, "weight_bytes", r->st.weight_bytes, "active_bytes_per_token",
                              r->st.active_bytes, "prefill_tok_s", r->prefill_tps, "prefill_gflop_s",
                              2 * r->st.active_params * r->prefill_tps / 1e9, "decode_tok_s", r->decode_tps,
                              "decode_weight_gb_s", gbs, "decode_fraction_of_bandwidth", bw > 0 ? gbs / bw : 0.0,
                              "prefill_seconds", pf, "decode_seconds", dc);
        json_object_set_new(o, "model", json_string(dirs[r->model]));
        json_object_set_new(o, "format", json_string(mlabel[r->model]));
        json_object_set_new(o, "label", json_string(r->label));
        json_object_set_new(o, "bandwidth_before_gb_s", json_real(r->bw));
        json_object_set_new(o, "prefill_matmul_gflop_s", json_real(mgf));
        json_object_set_new(o, "prefill_matmul_fraction_of_fma_peak", json_real(fma > 0 ? mgf / fma : 0));
        json_object_set_new(o, "prefill_matmul_fraction_of_gemm_peak", json_real(gemm > 0 ? mgf / gemm : 0));
        json_object_set_new(o, "decode_ms_per_token", json_real(1e3 * r->dec_total));
        json_object_set_new(o, "decode_breakdown_ms", prof_json(&r->dec));
        json_object_set_new(o, "prefill_ms_per_token", json_real(1e3 * r->pre_total));
        json_object_set_new(o, "prefill_breakdown_ms", prof_json(&r->pre));
        json_array_append_new(bl, o);
    }
    json_t *ml = json_array();
    for (int k = 0; k < n_dirs; k++) json_array_append_new(ml, json_pack("{s:s, s:s}", "dir", dirs[k], "format", mlabel[k]));
    json_t *root = json_pack("{s:s, s:s, s:i, s:i, s:f, s:f, s:f, s:f, s:I, s:o, s:i, s:i, s:i, s:o}",
                             "starling", ST_VERSION, "cpu_features", st_cpu_features(), "threads", threads, "cores",
                             omp_get_num_procs(), "read_bandwidth_gb_s", bw, "read_bandwidth_worst_gb_s", bw_min,
                             "fma_peak_gflop_s", fma, "gemm_peak_gflop_s", gemm, "bandwidth_buffer_bytes",
                             (json_int_t)bw_bytes, "models", ml, "prompt_tokens", prompt, "decode_tokens", gen, "reps",
                             reps, "budgets", bl);
    if (root) json_object_set_new(root, "kernels", json_pack("{s:s, s:s}", "isa", st_isa_name(st_isa_get()),
                                                            "nvfp4_decode", nvfp4_kernel()));
    if (!root) return cli_fail("bench", "cannot build the JSON report");
    /* atomic: a reader never sees half a report */
    char *txt = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    st_status st = txt ? st_write_file_atomic(path, txt, strlen(txt)) : ST_ERR_NOMEM;
    free(txt);
    if (st) return cli_fail("bench", "%s: cannot write the JSON report", path);
    return 0;
}

enum { O_GEN_MODEL = 256, O_BUDGET, O_PROMPT, O_GEN, O_REPS, O_JSON, O_BW, O_SVG, O_PRESET, O_BATCH, O_VERIFY };

#define MAX_MODELS 4

static const char *const g_colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};

/* Decode tok/s against bytes read per token, one point per model x budget,
 * with the roofline tok/s = bandwidth / bytes (best bandwidth of the run). */
static int write_svg(const char *path, const result *res, int n, const char *const *mlabel, double bw) {
    st_plot *p = st_plot_new(&(st_plot_axes){.title = "starling decode speed vs bytes read per token",
                                             .xlabel = "MB read per decoded token (log)",
                                             .ylabel = "decode tok/s (log)", .logx = 1, .logy = 1});
    if (!p) return cli_fail("bench", "out of memory");
    double lo = 1e30, hi = 0;
    for (int i = 0; i < n; i++) {
        double mb = res[i].st.active_bytes / 1e6;
        if (mb < lo) lo = mb;
        if (mb > hi) hi = mb;
    }
    double xs[2] = {lo / 1.6, hi * 1.6}, ys[2] = {bw * 1e3 / xs[0], bw * 1e3 / xs[1]};
    char lab[96];
    snprintf(lab, sizeof lab, "roofline %.1f GB/s", bw);
    st_plot_line(p, xs, ys, 2, "#888", lab, 1);
    double y85[2] = {0.85 * ys[0], 0.85 * ys[1]};
    st_plot_line(p, xs, y85, 2, "#bbb", "85% of roofline", 1);
    for (int i = 0; i < n; i++) {
        const result *r = &res[i];
        snprintf(lab, sizeof lab, "%s %s (%.0f%%)", mlabel[r->model], r->label,
                 100 * r->st.active_bytes * r->decode_tps / 1e9 / bw);
        st_plot_point(p, r->st.active_bytes / 1e6, r->decode_tps, g_colors[r->model % 6], lab);
    }
    for (int k = 0; mlabel[k]; k++) { /* legend entry per model: a zero-length line in its color */
        double x1[1] = {xs[0]}, y1[1] = {ys[0]};
        st_plot_line(p, x1, y1, 1, g_colors[k % 6], mlabel[k], 0);
    }
    st_status st = st_plot_write(p, path);
    st_plot_free(p);
    return st ? cli_fail_st("bench", st) : 0;
}

/* --batch with --svg: aggregate decode tok/s against the batch size, one line
 * per model x budget, beside the ideal (B x one stream) for the first. */
static int write_batch_svg(const char *path, const bresult *br, int nb, const result *res,
                           const char *const *mlabel) {
    st_plot *p = st_plot_new(&(st_plot_axes){.title = "batched decode: aggregate tok/s vs sequences per step",
                                             .xlabel = "sequences decoded together (log)",
                                             .ylabel = "aggregate decode tok/s (log)", .logx = 1, .logy = 1});
    if (!p) return cli_fail("bench", "out of memory");
    int color = 0;
    for (int i = 0; i < nb;) {
        int j = i;
        double xs[16], ys[16];
        int n = 0;
        while (j < nb && br[j].budget == br[i].budget && n < 16) { xs[n] = br[j].B; ys[n] = br[j].tok_s; n++; j++; }
        char lab[96];
        const result *r = &res[br[i].budget];
        snprintf(lab, sizeof lab, "%s %s", mlabel[r->model], r->label);
        st_plot_line(p, xs, ys, n, g_colors[color++ % 6], lab, 0);
        if (i == 0 && n > 1 && xs[0] == 1) { /* ideal scaling of the first line */
            double yi[16];
            for (int k = 0; k < n; k++) yi[k] = ys[0] * xs[k];
            st_plot_line(p, xs, yi, n, "#bbb", "B x one stream (first line)", 1);
        }
        i = j;
    }
    st_status st = st_plot_write(p, path);
    st_plot_free(p);
    return st ? cli_fail_st("bench", st) : 0;
}

/* FILE.svg -> FILE-what.svg (the extra plots beside the main one) */
static const char *svg_sibling(const char *svg, const char *what, char *buf, size_t cap) {
    const size_t L = strlen(svg);
    snprintf(buf, cap, "%.*s-%s.svg", (int)(L > 4 && !strcmp(svg + L - 4, ".svg") ? L - 4 : L), svg, what);
    return buf;
}

/* --verify with --svg: the cost of one k-token forward relative to one token,
 * per model x budget, between the two bounds that explain it: 1 (bandwidth
 * bound: the weights are read once whatever k) and k (compute bound). */
static int write_verify_svg(const char *path, double (*vsec)[17], int nv, int K, const result *res,
                            const char *const *mlabel) {
    st_plot *p = st_plot_new(&(st_plot_axes){.title = "speculative verification: cost of a k-token pass",
                                             .xlabel = "tokens in one forward pass (k = 1 + drafts)",
                                             .ylabel = "time relative to one token", .xmin = 1, .xmax = K, .ymin = 0});
    if (!p) return cli_fail("bench", "out of memory");
    double xs[17], ys[17];
    for (int k = 1; k <= K; k++) xs[k - 1] = k;
    for (int k = 1; k <= K; k++) ys[k - 1] = k;
    st_plot_line(p, xs, ys, K, "#bbb", "compute bound (k)", 1);
    for (int k = 1; k <= K; k++) ys[k - 1] = 1;
    st_plot_line(p, xs, ys, K, "#888", "bandwidth bound (1)", 1);
    for (int i = 0; i < nv; i++) {
        char lab[96];
        snprintf(lab, sizeof lab, "%s %s", mlabel[res[i].model], res[i].label);
        for (int k = 1; k <= K; k++) ys[k - 1] = vsec[i][k] / vsec[i][1];
        st_plot_line(p, xs, ys, K, g_colors[i % 6], lab, 0);
    }
    st_status st = st_plot_write(p, path);
    st_plot_free(p);
    return st ? cli_fail_st("bench", st) : 0;
}

int cmd_bench(int argc, char **argv) {
    const char *dirs[MAX_MODELS], *gen_dir = NULL, *budgets = NULL, *json = NULL, *svg = NULL, *preset = "bench";
    const char *extra[MAX_BUDGETS];
    int n_extra = 0, n_dirs = 0, n_bs = 0, bsizes[8];
    long threads = 2, prompt = 256, gen = 64, reps = 3, bw_mib = 0, verify_k = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"gen-model", required_argument, 0, O_GEN_MODEL},
        {"preset", required_argument, 0, O_PRESET},
        {"budgets", required_argument, 0, 'b'}, {"budget", required_argument, 0, O_BUDGET},
        {"threads", required_argument, 0, 't'}, {"prompt", required_argument, 0, O_PROMPT},
        {"gen", required_argument, 0, O_GEN}, {"reps", required_argument, 0, O_REPS},
        {"json", required_argument, 0, O_JSON}, {"svg", required_argument, 0, O_SVG},
        {"bw-mib", required_argument, 0, O_BW}, {"batch", required_argument, 0, O_BATCH},
        {"verify", required_argument, 0, O_VERIFY},
        {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":m:b:t:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm':
            if (n_dirs == MAX_MODELS) return cli_usage("bench", "at most %d models", MAX_MODELS);
            dirs[n_dirs++] = optarg;
            break;
        case O_GEN_MODEL: gen_dir = optarg; break;
        case O_PRESET: preset = optarg; break;
        case 'b': budgets = optarg; break;
        case O_BUDGET:
            if (n_extra == MAX_BUDGETS) return cli_usage("bench", "at most %d budgets", MAX_BUDGETS);
            extra[n_extra++] = optarg;
            break;
        case 't': if (cli_int(optarg, 0, 4096, &threads)) return cli_usage("bench", "bad --threads '%s'", optarg); break;
        case O_PROMPT: if (cli_int(optarg, 1, 1 << 20, &prompt)) return cli_usage("bench", "bad --prompt '%s'", optarg); break;
        case O_GEN: if (cli_int(optarg, 1, 1 << 20, &gen)) return cli_usage("bench", "bad --gen '%s'", optarg); break;
        case O_REPS: if (cli_int(optarg, 1, 64, &reps)) return cli_usage("bench", "bad --reps '%s' (1..64)", optarg); break;
        case O_JSON: json = optarg; break;
        case O_SVG: svg = optarg; break;
        case O_VERIFY: if (cli_int(optarg, 1, 16, &verify_k)) return cli_usage("bench", "bad --verify '%s' (1..16)", optarg); break;
        case O_BATCH: {
            char *save = NULL, *dup = strdup(optarg);
            n_bs = 0;
            for (char *t = dup ? strtok_r(dup, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save)) {
                long v;
                if (n_bs == 8 || cli_int(t, 1, 64, &v)) { free(dup); return cli_usage("bench", "bad --batch '%s' (up to 8 sizes, 1..64)", optarg); }
                bsizes[n_bs++] = (int)v;
            }
            free(dup);
            if (!n_bs) return cli_usage("bench", "bad --batch '%s'", optarg);
            break;
        }
        case O_BW: if (cli_int(optarg, 1, 1 << 20, &bw_mib)) return cli_usage("bench", "bad --bw-mib '%s'", optarg); break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage("bench", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage("bench", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("bench", "unexpected argument '%s'", argv[optind]);
    if (!!n_dirs + !!gen_dir != 1) return cli_usage("bench", "give -m DIR (repeatable) or --gen-model DIR");
    st_synth_opts so;
    if (gen_dir && st_synth_preset(preset, &so))
        return cli_usage("bench", "unknown --preset '%s' (default, bench, nano8, big)", preset);

    /* budgets: the --budgets list (default "full,S" unless --budget is given), then each --budget */
    char *specs[MAX_BUDGETS];
    int n = 0;
    if (budgets || !n_extra) {
        n = split_budgets(budgets ? budgets : "full,S", specs, 0, MAX_BUDGETS);
        if (n < 0) return cli_usage("bench", "too many budgets (at most %d)", MAX_BUDGETS);
    }
    for (int i = 0; i < n_extra; i++) {
        if (n == MAX_BUDGETS) { for (int k = 0; k < n; k++) free(specs[k]); return cli_usage("bench", "too many budgets (at most %d)", MAX_BUDGETS); }
        specs[n++] = strdup(extra[i]);
    }
    if (n == 0) return cli_usage("bench", "no budgets given");

    int cores = omp_get_num_procs();
    if (threads == 0 || threads > cores) threads = cores;
    st_set_threads((int)threads);

    result res[MAX_MODELS * MAX_BUDGETS];
    memset(res, 0, sizeof res);
    st_model *models[MAX_MODELS] = {0};
    const char *mlabel[MAX_MODELS + 1] = {0};
    char mlab_buf[MAX_MODELS][32];
    int rc = 0, done = 0, lw = 6, nr = 0, n_custom = 0;
    size_t bw_bytes = bw_mib ? (size_t)bw_mib << 20 : bw_bytes_default();
    double bw = -1, t_load[MAX_MODELS] = {0}, file_gb[MAX_MODELS] = {0};
    if (gen_dir) {
        if ((rc = gen_model(gen_dir, preset))) goto out;
        dirs[n_dirs++] = gen_dir;
    }
    /* every model and budget is checked before anything is measured */
    for (int k = 0; k < n_dirs; k++) {
        double t0 = st_time_now();
        if ((rc = cli_load("bench", dirs[k], NULL, &models[k], NULL))) goto out;
        t_load[k] = st_time_now() - t0;
        /* label: the weights' format, which is what the models of one run differ in */
        st_budget *full = NULL;
        st_budget_stats fs;
        if (st_budget_resolve(models[k], "full", &full)) { rc = cli_fail("bench", "cannot build the full budget"); goto out; }
        st_budget_stats_get(full, &fs);
        st_budget_free(full);
        const double bpw = fs.weight_bytes / fs.total_params;
        snprintf(mlab_buf[k], sizeof mlab_buf[k], "%s", bpw > 1.9 ? (bpw > 3 ? "f32" : "bf16") : bpw > 0.9 ? "fp8" : "nvfp4");
        /* two of one format (e.g. NVFP4 with and without its lm_head
         * quantized): the later one by its directory's name, else its number */
        for (int j = 0; j < k; j++)
            if (!strcmp(mlab_buf[j], mlab_buf[k])) {
                const char *d = dirs[k], *e = d + strlen(d);
                while (e > d && e[-1] == '/') e--;
                const char *b = e;
                while (b > d && b[-1] != '/') b--;
                snprintf(mlab_buf[k], sizeof mlab_buf[k], "%.*s", (int)(e - b), b);
                for (int i = 0; i < k; i++)
                    if (!mlab_buf[k][0] || !strcmp(mlab_buf[i], mlab_buf[k]) || strlen(mlab_buf[k]) > 12)
                        snprintf(mlab_buf[k], sizeof mlab_buf[k], "model%d", k + 1);
                break;
            }
        mlabel[k] = mlab_buf[k];
        for (int i = 0; i < n; i++, nr++) {
            result *r = &res[nr];
            r->spec = specs[i];
            r->model = k;
            st_status s = st_budget_resolve(models[k], specs[i], &r->b);
            if (s) { rc = cli_fail_st("bench", s); goto out; }
            snprintf(r->name, sizeof r->name, "%s", st_budget_name(r->b));
            if (!strcmp(r->name, "custom")) {
                int idx = -1; /* one label per custom spec, the same for every model */
                for (int j = 0; j < nr; j++) if (res[j].spec == specs[i]) { idx = j; break; }
                if (idx >= 0) snprintf(r->label, sizeof r->label, "%s", res[idx].label);
                else snprintf(r->label, sizeof r->label, "custom%d", ++n_custom);
            } else {
                snprintf(r->label, sizeof r->label, "%s", r->name);
            }
            st_budget_stats_get(r->b, &r->st);
            int l = (int)strlen(r->label) + 1 + (int)strlen(mlabel[k]);
            if (l > lw) lw = l;
        }
    }

    /* The machine's limits. Bandwidth on a shared host moves by tens of
     * percent from second to second, so it is measured again before every
     * budget and at the end, and every ratio is taken against the best seen
     * in the whole run (the conservative choice). */
    double bw_min = 1e30, fma = st_measure_fma_gflops((int)threads), gemm = st_measure_gemm_gflops(2048, 3);
    int n_bw = 0;
#define MEASURE_BW(dst)                                                                                    \
    do {                                                                                                   \
        double v_ = st_measure_read_bandwidth(bw_bytes, (int)threads);                                     \
        if (v_ < 0) {                                                                                      \
            rc = cli_fail("bench", "cannot allocate a %zu MiB bandwidth buffer (use --bw-mib)", bw_bytes >> 20); \
            goto out;                                                                                      \
        }                                                                                                  \
        n_bw++;                                                                                            \
        if (v_ > bw) bw = v_;                                                                              \
        if (v_ < bw_min) bw_min = v_;                                                                      \
        dst = v_;                                                                                          \
    } while (0)
    double bw_here = 0;
    MEASURE_BW(bw_here);

    printf("starling bench %s\n", ST_VERSION);
    printf("cpu        %s (kernels: %s; NVFP4 decode: %s)\n", st_cpu_features(), st_isa_name(st_isa_get()),
           nvfp4_kernel());
    printf("threads    %ld (of %d cores)\n", threads, cores);
    for (int k = 0; k < n_dirs; k++) {
        const st_config *c = st_model_config(models[k]);
        char p[4096];
        struct stat sb;
        snprintf(p, sizeof p, "%s/model.safetensors", dirs[k]);
        if (stat(p, &sb) == 0) file_gb[k] = (double)sb.st_size / 1e9;
        printf("model      %-6s %s  (%d layers %s, hidden %d, vocab %d%s%.2f GB file, loaded in %.2f s)\n", mlabel[k],
               dirs[k], c->n_layers, c->pattern, c->hidden_size, c->vocab_size, file_gb[k] > 0 ? ", " : "",
               file_gb[k], t_load[k]);
    }
    for (int i = 0; i < nr; i++)
        if (!strncmp(res[i].label, "custom", 6) && res[i].model == 0) printf("budget     %s = %s\n", res[i].label, res[i].spec);
    printf("workload   prefill %ld tokens; decode %ld tokens after it (each sampled: temp 0.8, top-p 0.95); "
           "best of %ld runs\n\n", prompt, gen, reps);
    fflush(stdout);

    /* Rounds: every budget once per round, the bandwidth once per round, so a
     * budget's best-of-reps spans the whole run instead of a few seconds of
     * it (a noisy neighbour then spoils one run of each budget, not every
     * run of one), and each ratio is taken from figures of the same minutes. */
    brun *runs = calloc((size_t)nr, sizeof *runs);
    if (!runs) rc = cli_fail("bench", "out of memory");
    for (int i = 0; i < nr && !rc; i++)
        rc = brun_open(models[res[i].model], &res[i], &runs[i], (int)prompt, (int)gen, 0x5eed0000ull + (uint64_t)(i % n));
    for (int rep = 0; rep < reps && !rc; rep++) {
        if (rep) MEASURE_BW(bw_here);
        for (int i = 0; i < nr && !rc; i++) {
            if (!rep) res[i].bw = bw_here;
            rc = brun_rep(&res[i], &runs[i], rep, (int)prompt, (int)gen);
        }
    }
    for (int i = 0; i < nr && !rc; i++) {
        rc = brun_profile(&res[i], &runs[i], (int)prompt, (int)gen);
        if (!rc) done++;
    }
    for (int i = 0; runs && i < nr; i++) brun_close(&runs[i]); /* zeroed ones too: the frees take NULL */
    free(runs);
    /* --batch: for every model and budget, each batch size */
    bresult bres[MAX_MODELS * MAX_BUDGETS * 8];
    int nb = 0;
    for (int i = 0; i < nr && !rc && n_bs; i++) {
        MEASURE_BW(bw_here);
        for (int k = 0; k < n_bs && !rc; k++) {
            bresult *br = &bres[nb];
            br->model = res[i].model;
            br->budget = i;
            br->B = bsizes[k];
            rc = run_batch(models[res[i].model], res[i].b, bsizes[k], (int)(prompt < 64 ? prompt : 64), (int)gen,
                           (int)reps, 0xba7c0000ull + (uint64_t)i, br);
            if (!rc) nb++;
        }
    }
    /* --verify: per budget, the cost of a k-token pass relative to one token */
    double vsec[MAX_MODELS * MAX_BUDGETS][17];
    int nv = 0;
    for (int i = 0; i < nr && !rc && verify_k; i++, nv++)
        rc = run_verify(models[res[i].model], res[i].b, (int)verify_k, (int)(prompt < 64 ? prompt : 64), (int)reps,
                        0x7e71f000ull + (uint64_t)i, vsec[i]);
    if (done) MEASURE_BW(bw_here);
#undef MEASURE_BW
    if (done) { /* the peaks once more: best of the two */
        double f2 = st_measure_fma_gflops((int)threads), g2 = st_measure_gemm_gflops(2048, 3);
        if (f2 > fma) fma = f2;
        if (g2 > gemm) gemm = g2;
    }
    if (done) {
        printf("fp32 peak  %.1f GFLOP/s FMA loop; %.1f GFLOP/s st_matmul GEMM 2048^3 (F32 weights); best of the "
               "start and the end of the run\n", fma, gemm);
        printf("bandwidth  best %.1f GB/s read (worst %.1f) over %d measurements in this run, %ld threads, "
               "%.0f MiB buffer; %% of bw is against the best\n\n", bw, bw_min, n_bw, threads,
               (double)bw_bytes / (1 << 20));
        printf("%-*s %8s %8s %8s | %9s %8s %6s %6s | %9s %8s %7s %6s\n", lw, "budget", "params", "active",
               "MB/tok", "prefill/s", "mm GF/s", "%fma", "%gemm", "decode/s", "ms/tok", "GB/s", "%bw");
        for (int i = 0; i < done; i++) {
            const result *r = &res[i];
            char tp[32], ap[32], nm[96];
            double gbs = r->st.active_bytes * r->decode_tps / 1e9;
            double mm_s = (r->pre.s[ST_PROF_MATMUL] + r->pre.s[ST_PROF_SYNC]) * prompt;
            double mgf = mm_s > 0 ? r->pre.flops / mm_s / 1e9 : 0;
            snprintf(nm, sizeof nm, "%s %s", mlabel[r->model], r->label);
            printf("%-*s %8s %8s %8.1f | %9.1f %8.1f %5.1f%% %5.1f%% | %9.2f %8.2f %7.2f %5.1f%%\n", lw, nm,
                   human(r->st.total_params, tp, sizeof tp), human(r->st.active_params, ap, sizeof ap),
                   r->st.active_bytes / 1e6, r->prefill_tps, mgf, fma > 0 ? 100 * mgf / fma : 0,
                   gemm > 0 ? 100 * mgf / gemm : 0, r->decode_tps, 1e3 / r->decode_tps, gbs,
                   bw > 0 ? 100 * gbs / bw : 0);
        }
        printf("\none decoded token, ms by op class (a profiled run; sync = threads waiting inside matmuls):\n");
        printf("%-*s %8s", lw, "budget", "total");
        for (int k = 0; k < ST_PROF_N; k++) printf(" %9s", st_prof_name((st_prof_class)k));
        printf("\n");
        for (int i = 0; i < done; i++) {
            const result *r = &res[i];
            char nm[96];
            snprintf(nm, sizeof nm, "%s %s", mlabel[r->model], r->label);
            printf("%-*s %8.3f", lw, nm, 1e3 * r->dec_total);
            for (int k = 0; k < ST_PROF_N; k++) printf(" %9.3f", 1e3 * r->dec.s[k]);
            printf("\n");
        }
        if (nb) {
            printf("\nbatched decode (st_forward_batch; each sequence after its own %ld-token prompt):\n",
                   prompt < 64 ? prompt : 64);
            printf("%-*s %5s %9s %12s %8s %9s %8s %6s\n", lw, "budget", "batch", "step ms", "agg tok/s", "vs B=1",
                   "MB/step", "GB/s", "%bw");
            for (int k = 0; k < nb; k++) {
                const bresult *br = &bres[k];
                const result *r = &res[br->budget];
                double one = 0;
                for (int j = 0; j < nb; j++)
                    if (bres[j].budget == br->budget && bres[j].B == 1) one = bres[j].tok_s;
                char nm[96];
                snprintf(nm, sizeof nm, "%s %s", mlabel[r->model], r->label);
                const double gbs = br->bytes / br->step_s / 1e9;
                printf("%-*s %5d %9.2f %12.2f %7.2fx %9.1f %8.2f %5.1f%%\n", lw, nm, br->B, 1e3 * br->step_s, br->tok_s,
                       one > 0 ? br->tok_s / one : 0, br->bytes / 1e6, gbs, bw > 0 ? 100 * gbs / bw : 0);
            }
        }
        if (nv) {
            printf("\nverify cost (one forward of k tokens after a %ld-token prompt, relative to k = 1), and the\n"
                   "speedup speculative decoding would give with a free drafter (prompt lookup) that drafts k-1\n"
                   "tokens accepted with probability a each: (1 - a^k) / (1 - a) tokens per pass of cost(k):\n",
                   prompt < 64 ? prompt : 64);
            printf("%-*s", lw, "budget");
            for (int k = 1; k <= verify_k; k++) printf("   k=%-4d", k);
            printf("  | a=0.5  a=0.7  a=0.9 (best k)\n");
            for (int i = 0; i < nv; i++) {
                char nm[96];
                snprintf(nm, sizeof nm, "%s %s", mlabel[res[i].model], res[i].label);
                printf("%-*s", lw, nm);
                for (int k = 1; k <= verify_k; k++) printf(" %7.2fx", vsec[i][k] / vsec[i][1]);
                printf("  |");
                const double as[3] = {0.5, 0.7, 0.9};
                for (int q = 0; q < 3; q++) {
                    double best = 1;
                    for (int k = 2; k <= verify_k; k++) {
                        const double e = (1 - pow(as[q], k)) / (1 - as[q]), v = e / (vsec[i][k] / vsec[i][1]);
                        if (v > best) best = v;
                    }
                    printf(" %5.2fx", best);
                }
                printf("\n");
            }
        }
        printf("\n(MB/tok: weight bytes one decoded token reads, top-k experts only; GB/s = MB/tok x decode/s;\n"
               " mm GF/s: matmul FLOPs of the prefill / its matmul wall time, against the FMA loop and the GEMM peak)\n");
        if (json && write_json(json, dirs, mlabel, n_dirs, (int)threads, bw, bw_min, fma, gemm, bw_bytes, (int)prompt,
                               (int)gen, (int)reps, res, done))
            rc = 1;
        if (svg && write_svg(svg, res, done, mlabel, bw)) rc = 1;
        if (svg && nb) {
            char bp[4096];
            if (write_batch_svg(svg_sibling(svg, "batch", bp, sizeof bp), bres, nb, res, mlabel)) rc = 1;
        }
        if (svg && nv && verify_k > 1) {
            char vp[4096];
            if (write_verify_svg(svg_sibling(svg, "verify", vp, sizeof vp), vsec, nv, (int)verify_k, res, mlabel)) rc = 1;
        }
    }
out:
    for (int i = 0; i < nr; i++) st_budget_free(res[i].b);
    for (int i = 0; i < n; i++) free(specs[i]);
    for (int k = 0; k < MAX_MODELS; k++) st_model_free(models[k]);
    return rc;
}
