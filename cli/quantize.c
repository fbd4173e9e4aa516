/*
 * quantize.c — `starling quantize`: a ModelOpt FP8 or NVFP4 copy of a BF16/F32
 * checkpoint that keeps the elastic nesting (see src/elastic/quantize.h).
 */
#include "cli.h"
#include "elastic/quantize.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static volatile int g_cancel;
static void on_signal(int sig) { (void)sig; g_cancel = 1; }

static void usage(FILE *f) {
    fprintf(f,
            "usage: starling quantize -m SRC -o DST --precision fp8|nvfp4 [options]\n\n"
            "  -m, --model SRC          BF16/F16/F32 checkpoint directory\n"
            "  -o, --output DST         output directory (must not exist unless --force)\n"
            "  -p, --precision P        fp8 (E4M3, per-tensor scale) or nvfp4 (E2M1, 16-wide\n"
            "                           E4M3 block scales, fp32 global scale)\n"
            "      --calib FILE         text for calibrating input scales (default: a built-in\n"
            "                           English sample)\n"
            "      --calib-tokens N     at most N calibration tokens (default 2048)\n"
            "      --quantize-attention also quantize q/k/v/o (kept in high precision by default,\n"
            "                           as in NVIDIA's releases)\n"
            "      --quantize-lm-head   also quantize lm_head (kept BF16 by default, as in NVIDIA's\n"
            "                           releases; it is the largest single read of a decoded token)\n"
            "      --shard-size GB      max shard size (default 5)\n"
            "  -f, --force              replace an existing DST\n"
            "  -q, --quiet              no progress bar\n\n"
            "Mamba in/out projections, MLPs, routed and shared experts are quantized; embeddings,\n"
            "lm_head (unless --quantize-lm-head), norms, conv1d and the router stay as they are.\n"
            "With nvfp4, a weight whose input dimension one of the checkpoint's budgets would cut\n"
            "inside a 16-wide block is stored as FP8 instead, so every budget slices without\n"
            "requantizing.\n");
}

enum { O_CALIB = 256, O_NCALIB, O_QATTN, O_QLM, O_SHARD };

int cmd_quantize(int argc, char **argv) {
    const char *src = NULL, *dst = NULL, *prec = NULL, *calib = NULL;
    long ncalib = 2048;
    double shard_gb = 5;
    int force = 0, quiet = 0, qattn = 0, qlm = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"output", required_argument, 0, 'o'},
        {"precision", required_argument, 0, 'p'}, {"calib", required_argument, 0, O_CALIB},
        {"calib-tokens", required_argument, 0, O_NCALIB}, {"quantize-attention", no_argument, 0, O_QATTN},
        {"quantize-lm-head", no_argument, 0, O_QLM},
        {"shard-size", required_argument, 0, O_SHARD}, {"force", no_argument, 0, 'f'},
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":m:o:p:fqh", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': src = optarg; break;
        case 'o': dst = optarg; break;
        case 'p': prec = optarg; break;
        case O_CALIB: calib = optarg; break;
        case O_NCALIB: if (cli_int(optarg, 0, 1 << 24, &ncalib)) return cli_usage("quantize", "bad --calib-tokens '%s'", optarg); break;
        case O_QATTN: qattn = 1; break;
        case O_QLM: qlm = 1; break;
        case O_SHARD: if (cli_float(optarg, 0.001, 1e6, &shard_gb)) return cli_usage("quantize", "bad --shard-size '%s'", optarg); break;
        case 'f': force = 1; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage("quantize", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage("quantize", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("quantize", "unexpected argument '%s'", argv[optind]);
    if (!src || !dst || !prec) return cli_usage("quantize", "-m SRC, -o DST and --precision are required");
    if (strcmp(prec, "fp8") && strcmp(prec, "nvfp4")) return cli_usage("quantize", "--precision must be fp8 or nvfp4");
    st_model *m;
    if (cli_load("quantize", src, NULL, &m, NULL)) return 1;
    int ret = 1;
    int32_t *ids = NULL;
    int n_ids = 0;
    if (cli_calib_tokens("quantize", m, src, calib, (int)ncalib, &ids, &n_ids)) goto out;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    st_quant_opts o = {.precision = prec, .quantize_attention = qattn, .quantize_lm_head = qlm, .calib = ids, .n_calib = n_ids,
                       .shard_bytes = (uint64_t)(shard_gb * 1e9), .force = force, .progress = !quiet,
                       .cancel = &g_cancel};
    st_quant_report r;
    st_status rc = st_quantize(m, dst, &o, &r);
    if (rc) { cli_fail_st("quantize", rc); goto out; }
    if (!quiet)
        fprintf(stderr, "quantized %s -> %s: %d NVFP4, %d FP8, %d kept weights; %.1f MB -> %.1f MB (%d calibration tokens)\n",
                src, dst, r.n_nvfp4, r.n_fp8, r.n_kept, r.bytes_in / 1e6, r.bytes_out / 1e6, n_ids);
    ret = 0;
out:
    free(ids);
    st_model_free(m);
    return ret;
}
