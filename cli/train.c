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
#include "model/model.h"
#include "train/train.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
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

/* A Nemotron-H-shaped benchmark model (~40M parameters, ~20M active). */
static const char *BENCH_MODEL =
    "{\"model_type\":\"nemotron_h\",\"vocab_size\":8192,\"hidden_size\":768,\"hybrid_override_pattern\":\"MEM*EM\","
    "\"mamba_num_heads\":24,\"mamba_head_dim\":64,\"ssm_state_size\":64,\"n_groups\":4,\"conv_kernel\":4,"
    "\"num_attention_heads\":12,\"num_key_value_heads\":2,\"head_dim\":64,"
    "\"n_routed_experts\":8,\"num_experts_per_tok\":2,\"moe_intermediate_size\":1024,\"n_shared_experts\":1,"
    "\"moe_shared_expert_intermediate_size\":1024,\"routed_scaling_factor\":2.5,\"norm_topk_prob\":true}";

static int bench(const st_train_cfg *c, int have_cfg, int B, int T, int steps) {
    st_config cfg;
    st_tmodel *m = NULL;
    st_status rc;
    if (have_cfg && c->init_dir) {
        st_model *src;
        if ((rc = st_model_load(c->init_dir, &src))) return cli_fail_st("train", rc);
        cfg = *st_model_config(src);
        st_model_free(src);
    } else {
        json_t *j = json_loads(have_cfg ? c->model_json : BENCH_MODEL, 0, NULL);
        rc = st_config_parse(j, "bench model", &cfg);
        json_decref(j);
        if (rc) return cli_fail_st("train", rc);
    }
    if ((rc = st_tmodel_new(&cfg, &m))) return cli_fail_st("train", rc);
    st_tmodel_init(m, 1);
    if ((rc = st_tmodel_reserve(m, B, T))) { st_tmodel_free(m); return cli_fail_st("train", rc); }
    st_adamw opt;
    st_adamw_opts oo = st_adamw_default_params();
    if ((rc = st_adamw_new(&opt, m, &oo))) { st_tmodel_free(m); return cli_fail_st("train", rc); }
    int BT = B * T;
    int32_t *x = malloc(sizeof(int32_t) * BT), *y = malloc(sizeof(int32_t) * BT);
    uint64_t s = 1;
    for (int i = 0; i < BT; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (int32_t)((s >> 33) % (uint64_t)cfg.vocab_size);
        y[i] = (int32_t)((s >> 13) % (uint64_t)cfg.vocab_size);
    }
    printf("fp32 GEMM peak (st_matmul, 2048^3, %d threads): ", st_get_threads());
    fflush(stdout);
    double peak = st_measure_gemm_gflops(2048, 5);
    printf("%.1f GFLOP/s\n", peak);
    fflush(stdout);
    double active = st_tmodel_active_params(m);
    printf("model: pattern %s, hidden %d, %.2fM parameters (%.2fM active w/o embedding), batch %d x %d tokens\n",
           cfg.pattern, cfg.hidden_size, (double)m->n_w / 1e6, active / 1e6, B, T);
    double best = 1e30, sum = 0, tf = 0, tb = 0, to = 0;
    int n = 0;
    for (int i = 0; i < steps + 1; i++) {
        double t0 = st_time_now();
        st_tmodel_zero_grad(m);
        float loss = st_tmodel_forward(m, x, y);
        double t1 = st_time_now();
        st_tmodel_backward(m, 1.0f);
        double t2 = st_time_now();
        st_adamw_step(&opt, m, 1e-4f);
        double t3 = st_time_now(), dt = t3 - t0;
        if (i == 0) continue; /* warm-up step */
        if (dt < best) best = dt;
        sum += dt; tf += t1 - t0; tb += t2 - t1; to += t3 - t2;
        n++;
        fprintf(stderr, "  step %d: %.3f s (fwd %.3f, bwd %.3f, adamw %.3f), loss %.4f\n", i, dt, t1 - t0, t2 - t1, t3 - t2, loss);
    }
    double mean = sum / n, tps = BT / mean;
    double achieved = 6.0 * active * tps / 1e9;
    printf("training: %.0f tok/s (mean of %d steps; best %.0f tok/s); forward %.0f%%, backward %.0f%%, adamw %.0f%%\n", tps,
           n, BT / best, 100 * tf / sum, 100 * tb / sum, 100 * to / sum);
    printf("6 x active params x tok/s = %.1f GFLOP/s = %.1f%% of the fp32 GEMM peak\n", achieved, 100 * achieved / peak);
    free(x); free(y);
    st_adamw_free(&opt);
    st_tmodel_free(m);
    return 0;
}

int cmd_train(int argc, char **argv) {
    const char *cfg_path = NULL, *resume = NULL;
    long threads = -1, B = 8, T = 256, steps = 5;
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
    if (c.threads > 0) st_set_threads(c.threads);
    int ret;
    if (do_bench) {
        ret = bench(&c, cfg_path != NULL, (int)B, (int)T, (int)steps);
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
