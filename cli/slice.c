/*
 * slice.c — `starling slice`: cut one budget out of an elastic checkpoint as
 * an ordinary Hugging Face Nemotron-H checkpoint that engines without budget
 * support load as a plain model. Streams tensor by tensor; the target appears
 * only when complete (SIGINT/SIGTERM leave no target behind).
 */
#include "cli.h"
#include "elastic/quantize.h"
#include "elastic/gguf_export.h"
#include "elastic/slice.h"

#include <unistd.h>

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static volatile int g_cancel;
static void on_signal(int sig) { (void)sig; g_cancel = 1; }

static void usage(FILE *f) {
    fprintf(f,
            "usage: starling slice -s SRC -t DST (--size NAME | --budget B | --budget-file F) [options]\n\n"
            "  -s, --source-checkpoint SRC   elastic checkpoint directory (read only)\n"
            "  -t, --target-checkpoint DST   output directory (must not exist unless --force)\n"
            "  -S, --size NAME               a budget named in SRC's elastic block (e.g. 12B, S)\n"
            "  -b, --budget B                explicit widths 'hidden_size=...,...' (or a name)\n"
            "      --budget-file F           widths from a JSON file\n"
            "  -p, --precision P             output precision: keep (default), bf16, f16, f32,\n"
            "                                fp8 or nvfp4 (ModelOpt formats; a quantized source is\n"
            "                                sliced by copying its bytes and scales instead);\n"
            "                                bf16/f16 keep at F32 what the source stores at F32\n"
            "                                for numerics: router weight and bias, A_log, D,\n"
            "                                dt_bias and norm weights\n"
            "      --calib FILE              calibration text for fp8/nvfp4 input scales\n"
            "      --format F                hf (default): a checkpoint directory; gguf: one GGUF\n"
            "                                file for llama.cpp (nemotron_h / nemotron_h_moe), with\n"
            "                                --precision f32 (default), f16, bf16 or q8_0\n"
            "      --shard-size GB           max shard size in GB (default 5)\n"
            "  -f, --force                   replace an existing target\n"
            "  -q, --quiet                   no progress bar\n\n"
            "The output keeps the kept prefix of every ranked axis, drops skipped layers, rewrites\n"
            "config.json with the budget's widths (keeping only the elastic budgets nested inside\n"
            "it), and copies the tokenizer and generation files.\n");
}

enum { O_BFILE = 256, O_SHARD, O_CALIB, O_FORMAT };

static int rm_mid(const char *mid);
static int slice_gguf(st_model *m, st_budget *b, const char *dst, const char *prec, int quiet);

int cmd_slice(int argc, char **argv) {
    const char *src = NULL, *dst = NULL, *spec = NULL, *prec = NULL, *calib = NULL, *format = "hf";
    double shard_gb = 5;
    int force = 0, quiet = 0;
    static const struct option opts[] = {
        {"source-checkpoint", required_argument, 0, 's'}, {"target-checkpoint", required_argument, 0, 't'},
        {"size", required_argument, 0, 'S'}, {"budget", required_argument, 0, 'b'},
        {"budget-file", required_argument, 0, O_BFILE}, {"precision", required_argument, 0, 'p'},
        {"shard-size", required_argument, 0, O_SHARD}, {"force", no_argument, 0, 'f'},
        {"quiet", no_argument, 0, 'q'}, {"calib", required_argument, 0, O_CALIB}, {"format", required_argument, 0, O_FORMAT}, {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":s:t:S:b:p:fqh", opts, NULL)) != -1) {
        switch (ch) {
        case 's': src = optarg; break;
        case 't': dst = optarg; break;
        case 'S': case 'b':
            if (spec) return cli_usage("slice", "give one of --size, --budget, --budget-file");
            spec = optarg;
            break;
        case O_BFILE:
            if (spec) return cli_usage("slice", "give one of --size, --budget, --budget-file");
            spec = cli_budget_file(optarg);
            break;
        case 'p': prec = optarg; break;
        case O_SHARD: if (cli_float(optarg, 0.001, 1e6, &shard_gb)) return cli_usage("slice", "bad --shard-size '%s'", optarg); break;
        case 'f': force = 1; break;
        case 'q': quiet = 1; break;
        case O_CALIB: calib = optarg; break;
        case O_FORMAT:
            if (strcmp(optarg, "hf") && strcmp(optarg, "gguf")) return cli_usage("slice", "bad --format '%s' (hf or gguf)", optarg);
            format = optarg;
            break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage("slice", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage("slice", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("slice", "unexpected argument '%s'", argv[optind]);
    if (!src || !dst) return cli_usage("slice", "--source-checkpoint and --target-checkpoint are required");
    if (!spec) return cli_usage("slice", "say which size to cut: --size NAME, --budget or --budget-file");
    if (prec && !strcmp(prec, "keep")) prec = NULL;
    int gguf = !strcmp(format, "gguf");
    if (gguf && prec && strcmp(prec, "f32") && strcmp(prec, "f16") && strcmp(prec, "bf16") && strcmp(prec, "q8_0"))
        return cli_usage("slice", "--format gguf takes --precision f32, f16, bf16 or q8_0, not '%s'", prec);
    if (gguf && calib) return cli_usage("slice", "--calib is for fp8/nvfp4 checkpoints, not --format gguf");
    if (gguf && !force && access(dst, F_OK) == 0) return cli_fail("slice", "%s exists (use --force to replace it)", dst);
    st_model *m;
    st_budget *b;
    if (cli_load("slice", src, spec, &m, &b)) return 1;
    if (gguf) {
        int r = slice_gguf(m, b, dst, prec, quiet);
        st_budget_free(b);
        st_model_free(m);
        return r;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int quant = prec && (!strcmp(prec, "fp8") || !strcmp(prec, "nvfp4"));
    /* fp8/nvfp4 from a float source: slice into a temporary float checkpoint
       beside the target, then quantize that (scales fit the slice) */
    char mid[4200];
    snprintf(mid, sizeof mid, "%s.slice.%ld", dst, (long)getpid());
    st_slice_opts o = {.shard_bytes = (uint64_t)(shard_gb * 1e9), .force = quant ? 0 : force, .progress = !quiet,
                       .precision = quant ? NULL : prec, .cancel = &g_cancel};
    st_status rc = st_slice(m, b, quant ? mid : dst, &o);
    int ret = 0;
    if (rc) ret = cli_fail_st("slice", rc);
    if (!ret && quant) {
        st_model *sm = NULL;
        int32_t *ids = NULL;
        int n_ids = 0;
        if (cli_load("slice", mid, NULL, &sm, NULL) || cli_calib_tokens("slice", sm, mid, calib, 2048, &ids, &n_ids)) {
            ret = 1;
        } else {
            st_quant_opts q = {.precision = prec, .calib = ids, .n_calib = n_ids, .shard_bytes = o.shard_bytes,
                               .force = force, .progress = !quiet, .cancel = &g_cancel};
            st_quant_report r;
            rc = st_quantize(sm, dst, &q, &r);
            if (rc) ret = cli_fail_st("slice", rc);
        }
        free(ids);
        st_model_free(sm);
        if (rm_mid(mid)) ret = ret ? ret : 1;
    }
    if (!ret && !quiet) {
        st_budget_stats s;
        st_budget_stats_get(b, &s);
        fprintf(stderr, "sliced %s (budget %s, %.2fM params) -> %s%s%s\n", src, st_budget_name(b), s.total_params / 1e6,
                dst, prec ? " as " : "", prec ? prec : "");
    }
    st_budget_free(b);
    st_model_free(m);
    return ret;
}

/* Remove a temporary slice directory made beside the target. */
static int rm_mid(const char *mid) {
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", mid);
    return !strchr(mid, '\'') && system(cmd) != 0 ? cli_fail("slice", "could not remove %s", mid) : 0;
}

/* GGUF: slice the budget into a temporary float checkpoint beside the target
 * (the safetensors slicer does the cutting), then write that as one GGUF file
 * (written as DST.tmp.PID and renamed when complete). */
static int slice_gguf(st_model *m, st_budget *b, const char *dst, const char *prec, int quiet) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    char mid[4200];
    snprintf(mid, sizeof mid, "%s.slice.%ld", dst, (long)getpid());
    st_slice_opts o = {.shard_bytes = (uint64_t)5e9, .progress = 0, .cancel = &g_cancel};
    st_status rc = st_slice(m, b, mid, &o);
    int ret = rc ? cli_fail_st("slice", rc) : 0;
    st_model *sm = NULL;
    if (!ret && cli_load("slice", mid, NULL, &sm, NULL)) ret = 1;
    if (!ret) {
        char name[128];
        snprintf(name, sizeof name, "starling %s", st_budget_name(b));
        st_gguf_export_opts g = {.precision = prec, .name = name, .progress = !quiet, .cancel = &g_cancel};
        rc = st_gguf_export(sm, dst, &g);
        if (rc) ret = cli_fail_st("slice", rc);
    }
    st_model_free(sm);
    if (rm_mid(mid)) ret = ret ? ret : 1;
    if (!ret && !quiet) {
        st_budget_stats s;
        st_budget_stats_get(b, &s);
        fprintf(stderr, "sliced %s (budget %s, %.2fM params) -> %s as GGUF %s\n", st_model_dir(m), st_budget_name(b),
                s.total_params / 1e6, dst, prec ? prec : "f32");
    }
    return ret;
}
