/*
 * train.c — `starling train --config FILE [--resume DIR]`: pretrain a
 * Nemotron-H model (src/train), and `starling train --bench`: training tok/s
 * and the fraction of the measured fp32 GEMM peak it reaches.
 *
 * Config (JSON; paths relative to the config file):
 *   {
 *     "model": {"vocab_size": 272, "hidden_size": 128, "hybrid_override_pattern": "ME*M-E",
 *               "mamba_num_heads": 8, "mamba_head_dim": 16, "ssm_state_size": 16, "n_groups": 2,
 *               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
 *               "intermediate_size": 256, "n_routed_experts": 8, "num_experts_per_tok": 2,
 *               "moe_intermediate_size": 64, "moe_shared_expert_intermediate_size": 128,
 *               "routed_scaling_factor": 2.5, "norm_topk_prob": true},   (or "init": "ckpt_dir")
 *     "tokenizer": "dir_with_tokenizer_json",          (optional; copied into checkpoints)
 *     "data": {"train": "train.bin", "val": "val.bin"}, (train may be [{"path": F, "weight": W}, ...])
 *     "batch": 8, "seq": 256, "accum": 1, "steps": 1000,
 *     "lr": 3e-4, "min_lr": 3e-5, "warmup": 100, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95,
 *     "grad_clip": 1.0, "eval_every": 100, "eval_batches": 8, "ckpt_every": 500,
 *     "balance_rate": 1e-3, "seed": 1, "threads": 0, "out": "runs/tiny"
 *   }
 * Token files: flat little-endian uint32 ids, no header.
 */
#include "cli.h"
#include "train/train.h"

#include <getopt.h>
#include <stdlib.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f, "usage: starling train --config FILE [--resume DIR] [--threads N]\n"
               "       starling train --bench [--config FILE] [--batch B] [--seq T] [--steps N] [--threads N]\n\n"
               "Pretrain a Nemotron-H model (Mamba-2 + attention + MLP/MoE) in fp32 with AdamW,\n"
               "warmup + cosine lr, grad clipping, gradient accumulation and aux-loss-free MoE load\n"
               "balancing. Writes OUT/log.csv, OUT/loss.svg and checkpoints OUT/step_N, OUT/final\n"
               "(Hugging Face directories that `starling run -m` loads, plus optimizer state);\n"
               "--resume OUT/step_N continues exactly where that checkpoint stopped.\n"
               "--bench times training steps on random tokens and reports tok/s and\n"
               "6 x active params x tok/s as a fraction of the measured fp32 GEMM peak.\n"
               "Config keys and the token file format: docs/training.md.\n");
}

static void fmt_time(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "?"); return; }
    long t = (long)s;
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

typedef struct { int tty; double last_val; } prog;

static void on_step(const st_train_event *e, void *user) {
    prog *p = user;
    if (e->val_loss >= 0) p->last_val = e->val_loss;
    char eta[32], el[32];
    fmt_time(e->eta_s, eta, sizeof eta);
    fmt_time(e->elapsed_s, el, sizeof el);
    int w = 24, fill = (int)((double)w * e->step / (e->steps > 0 ? e->steps : 1));
    char bar[32];
    for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
    bar[w] = 0;
    char val[32] = "";
    if (p->last_val >= 0) snprintf(val, sizeof val, " val %.4f", p->last_val);
    char moe[48] = "";
    if (e->load_max_over_mean > 0) snprintf(moe, sizeof moe, " | load max/mean %.2f", e->load_max_over_mean);
    if (p->tty) {
        fprintf(stderr, "\r[%s] %ld/%ld loss %.4f%s | lr %.2e | %.0f tok/s%s | %s, ETA %s%s   ", bar, e->step, e->steps,
                e->loss, val, e->lr, e->tok_per_s, moe, el, eta, e->saved ? " | saved" : "");
        if (e->step == e->steps) fputc('\n', stderr);
    } else if (e->val_loss >= 0 || e->saved || e->step == e->steps || e->step % 50 == 0) {
        fprintf(stderr, "step %ld/%ld loss %.4f%s lr %.2e %.0f tok/s%s elapsed %s ETA %s%s\n", e->step, e->steps, e->loss,
                val, e->lr, e->tok_per_s, moe, el, eta, e->saved ? " (checkpoint saved)" : "");
    }
}

typedef struct { int B, T; double peak; } bench_out;

static void on_bench(const st_train_bench_event *e, void *user) {
    bench_out *o = user;
    if (e->step == 0) { /* the model is ready: measure the peak, then time the steps */
        printf("fp32 GEMM peak (st_matmul, 2048^3, %d threads): ", st_get_threads());
        fflush(stdout);
        o->peak = st_measure_gemm_gflops(2048, 5);
        printf("%.1f GFLOP/s\n", o->peak);
        fflush(stdout);
        printf("model: pattern %s, hidden %d, %.2fM parameters (%.2fM active w/o embedding), batch %d x %d tokens\n",
               e->cfg->pattern, e->cfg->hidden_size, e->params / 1e6, e->active_params / 1e6, o->B, o->T);
        return;
    }
    fprintf(stderr, "  step %d: %.3f s (fwd %.3f, bwd %.3f, adamw %.3f), loss %.4f\n", e->step, e->step_s, e->fwd_s, e->bwd_s,
            e->opt_s, e->loss);
}

static int bench(const st_train_cfg *c, int B, int T, int steps) {
    st_train_bench_params p = st_train_bench_default_params();
    p.batch = B; p.seq = T; p.steps = steps;
    bench_out o = {B, T, 0};
    st_train_bench_result r;
    st_status rc = st_train_bench(c, &p, on_bench, &o, &r);
    if (rc) return cli_fail_st("train", rc);
    const int BT = B * T;
    double mean = r.sum_s / r.n, tps = BT / mean;
    double achieved = 6.0 * r.active_params * tps / 1e9;
    printf("training: %.0f tok/s (mean of %d steps; best %.0f tok/s); forward %.0f%%, backward %.0f%%, adamw %.0f%%\n", tps,
           r.n, BT / r.best_s, 100 * r.fwd_s / r.sum_s, 100 * r.bwd_s / r.sum_s, 100 * r.opt_s / r.sum_s);
    printf("6 x active params x tok/s = %.1f GFLOP/s = %.1f%% of the fp32 GEMM peak\n", achieved, 100 * achieved / o.peak);
    return 0;
}

int cmd_train(int argc, char **argv) {
    const char *cfg_path = NULL, *resume = NULL;
    st_train_bench_params bp = st_train_bench_default_params();
    long threads = -1, B = bp.batch, T = bp.seq, steps = bp.steps;
    int do_bench = 0;
    static const struct option opts[] = {{"config", required_argument, 0, 'c'}, {"resume", required_argument, 0, 'r'},
                                         {"threads", required_argument, 0, 't'}, {"bench", no_argument, 0, 'b'},
                                         {"batch", required_argument, 0, 'B'}, {"seq", required_argument, 0, 'T'},
                                         {"steps", required_argument, 0, 'n'}, {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":c:r:t:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': cfg_path = optarg; break;
        case 'r': resume = optarg; break;
        case 't': if (cli_int(optarg, 0, 4096, &threads)) return cli_usage("train", "bad --threads '%s'", optarg); break;
        case 'b': do_bench = 1; break;
        case 'B': if (cli_int(optarg, 1, 1 << 16, &B)) return cli_usage("train", "bad --batch '%s'", optarg); break;
        case 'T': if (cli_int(optarg, 1, 1 << 20, &T)) return cli_usage("train", "bad --seq '%s'", optarg); break;
        case 'n': if (cli_int(optarg, 1, 1 << 20, &steps)) return cli_usage("train", "bad --steps '%s'", optarg); break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage("train", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage("train", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("train", "unexpected argument '%s'", argv[optind]);
    if (!cfg_path && !do_bench) return cli_usage("train", "--config FILE is required");
    st_train_cfg c;
    st_train_cfg_init(&c);
    if (cfg_path) {
        st_status rc = st_train_cfg_load(&c, cfg_path);
        if (rc) return cli_fail_st("train", rc);
    }
    if (threads >= 0) c.threads = (int)threads;
    int ret;
    if (do_bench) {
        ret = bench(&c, (int)B, (int)T, (int)steps);
    } else {
        prog p = {isatty(2), -1};
        st_status rc = st_train_run(&c, resume, on_step, &p);
        if (p.tty) fputc('\n', stderr);
        ret = rc ? cli_fail_st("train", rc) : 0;
        if (!rc) fprintf(stderr, "wrote %s/final, %s/log.csv and %s/loss.svg\n", c.out_dir, c.out_dir, c.out_dir);
    }
    st_train_cfg_free(&c);
    return ret;
}
