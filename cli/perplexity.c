/*
 * perplexity.c — `starling perplexity`: exp(mean NLL of each next token) over
 * a text split into non-overlapping windows of --ctx tokens, each evaluated
 * from a fresh state with one batched forward.
 */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

static void usage(FILE *f) {
    fprintf(f, "usage: starling perplexity -m DIR [--budget B] -f FILE [--ctx N] [--max-windows K]\n\n"
               "  -m, --model DIR      checkpoint directory (with tokenizer.json)\n"
               "  -b, --budget B       budget (name, 'full', k=v widths, @file.json)\n"
               "      --budget-file F  budget widths from a JSON file\n"
               "  -f, --file FILE      UTF-8 text ('-' = stdin)\n"
               "  -c, --ctx N          window length in tokens (default 512)\n"
               "      --max-windows K  stop after K windows\n"
               "  -t, --threads N      threads\n");
}

int cmd_perplexity(int argc, char **argv) {
    const char *dir = NULL, *budget = NULL, *file = NULL;
    long ctx = 512, threads = 0, maxw = 0;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"budget", required_argument, 0, 'b'}, {"budget-file", required_argument, 0, 'B'},
                                         {"file", required_argument, 0, 'f'}, {"ctx", required_argument, 0, 'c'},
                                         {"max-windows", required_argument, 0, 'W'},
                                         {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":m:b:f:c:t:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': dir = optarg; break;
        case 'b': budget = optarg; break;
        case 'B': budget = cli_budget_file(optarg); break;
        case 'f': file = optarg; break;
        case 'c': if (cli_int(optarg, 2, 1 << 20, &ctx)) return cli_usage("perplexity", "bad --ctx '%s'", optarg); break;
        case 'W': if (cli_int(optarg, 1, 1 << 30, &maxw)) return cli_usage("perplexity", "bad --max-windows '%s'", optarg); break;
        case 't': if (cli_int(optarg, 0, 1024, &threads)) return cli_usage("perplexity", "bad --threads '%s'", optarg); break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage("perplexity", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage("perplexity", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("perplexity", "unexpected argument '%s'", argv[optind]);
    if (!dir || !file) return cli_usage("perplexity", "-m DIR and -f FILE are required");
    if (threads) st_set_threads((int)threads);
    size_t len;
    char *text = cli_read_text("perplexity", file, &len);
    if (!text) return 1;
    st_model *m;
    st_budget *b;
    if (cli_load("perplexity", dir, budget, &m, &b)) { free(text); return 1; }
    int rc = 1, n = 0;
    int32_t *ids = NULL;
    float *lg = NULL;
    st_tokenizer *tok = NULL;
    st_state *s = NULL;
    char tp[4096];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", dir);
    st_status e = st_tokenizer_load(tp, &tok);
    if (!e) e = st_tokenize(tok, text, len, 0, &ids, &n);
    if (e) { cli_fail_st("perplexity", e); goto out; }
    const int V = st_model_config(m)->vocab_size;
    if (n < 2) { cli_fail("perplexity", "%s: need at least 2 tokens, got %d", file, n); goto out; }
    lg = malloc(sizeof(float) * (size_t)ctx * V);
    if (!lg || (e = st_state_new(m, (int)ctx, &s))) { cli_fail("perplexity", "out of memory"); goto out; }
    double nll = 0, t0 = st_time();
    long counted = 0, windows = 0;
    st_progress pr;
    st_progress_begin(&pr, "perplexity", n, "tok");
    for (int at = 0; at + 1 < n; at += (int)ctx) {
        if (maxw && windows >= maxw) break;
        int w = n - at < ctx ? n - at : (int)ctx;
        if (w < 2) break;
        st_state_reset(s);
        if ((e = st_forward(b, s, ids + at, w, lg, 1))) { cli_fail_st("perplexity", e); goto out; }
        for (int i = 0; i + 1 < w; i++) {
            const float *r = lg + (size_t)i * V;
            float mx = r[0];
            for (int j = 1; j < V; j++) if (r[j] > mx) mx = r[j];
            double se = 0;
            for (int j = 0; j < V; j++) se += exp((double)(r[j] - mx));
            nll += log(se) + mx - r[ids[at + i + 1]];
            counted++;
        }
        windows++;
        st_progress_update(&pr, at + w);
    }
    st_progress_end(&pr);
    double dt = st_time() - t0;
    printf("budget %s: perplexity %.4f over %ld predicted tokens (%ld windows of <= %ld), %.1f tok/s\n",
           st_budget_name(b), exp(nll / (double)counted), counted, windows, ctx, (double)(counted + windows) / dt);
    rc = 0;
out:
    st_state_free(s);
    st_tokenizer_free(tok);
    free(lg); free(ids); free(text);
    st_budget_free(b);
    st_model_free(m);
    return rc;
}
