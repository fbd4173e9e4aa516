/*
 * logits.c — `starling logits`: float32 little-endian logits for every
 * position of a token sequence, row-major [T × vocab], from one batched
 * forward (or with --decode the same tokens one by one through the decode
 * path). Written atomically.
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

/* atomic whole-file write lives in the library's util; reuse it */
#include "util/util.h"

static void usage(FILE *f) {
    fprintf(f, "usage: starling logits -m DIR [--budget B] (--tokens \"ID ID ...\" | --tokens-file FILE) --out FILE [--decode]\n\n"
               "  -m, --model DIR        checkpoint directory\n"
               "  -b, --budget B         budget (name, 'full', k=v widths, @file.json)\n"
               "      --budget-file F    budget widths from a JSON file (config key names)\n"
               "      --tokens IDS       space-separated token ids\n"
               "      --tokens-file FILE the ids in a file\n"
               "  -o, --out FILE         output: float32 LE [T x vocab], row-major\n"
               "      --decode           run the tokens one at a time through the decode path\n"
               "      --chunk N          prefill in chunks of N tokens\n"
               "  -t, --threads N        threads\n");
}

enum { O_TOKENS = 256, O_TOKFILE, O_DECODE, O_CHUNK };

int cmd_logits(int argc, char **argv) {
    const char *dir = NULL, *budget = NULL, *toks = NULL, *tokfile = NULL, *out = NULL;
    long threads = 0, chunk = 0;
    int decode = 0;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"budget", required_argument, 0, 'b'}, {"budget-file", required_argument, 0, 'B'},
                                         {"tokens", required_argument, 0, O_TOKENS},
                                         {"tokens-file", required_argument, 0, O_TOKFILE},
                                         {"out", required_argument, 0, 'o'}, {"decode", no_argument, 0, O_DECODE},
                                         {"chunk", required_argument, 0, O_CHUNK},
                                         {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":m:b:o:t:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': dir = optarg; break;
        case 'b': budget = optarg; break;
        case 'B': budget = cli_budget_file(optarg); break;
        case O_TOKENS: toks = optarg; break;
        case O_TOKFILE: tokfile = optarg; break;
        case 'o': out = optarg; break;
        case O_DECODE: decode = 1; break;
        case O_CHUNK: if (cli_int(optarg, 1, 1 << 24, &chunk)) return cli_usage("logits", "bad --chunk '%s'", optarg); break;
        case 't': if (cli_int(optarg, 0, 1024, &threads)) return cli_usage("logits", "bad --threads '%s'", optarg); break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage("logits", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage("logits", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("logits", "unexpected argument '%s'", argv[optind]);
    if (!dir || !out) return cli_usage("logits", "-m DIR and --out FILE are required");
    if (!!toks + !!tokfile != 1) return cli_usage("logits", "give exactly one of --tokens or --tokens-file");
    if (threads) st_set_threads((int)threads);
    char *text = tokfile ? cli_read_text("logits", tokfile, NULL) : strdup(toks);
    if (!text) return 1;
    int n = 0, cap = 256, rc = 1;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    for (char *p = text, *tk; (tk = strtok_r(p, " \t\r\n,", &p));) {
        long v;
        if (cli_int(tk, 0, 0x7fffffff, &v)) { free(ids); free(text); return cli_usage("logits", "'%s' is not a token id", tk); }
        if (n == cap) { cap *= 2; ids = realloc(ids, sizeof(int32_t) * (size_t)cap); }
        ids[n++] = (int32_t)v;
    }
    free(text);
    if (!n) { free(ids); return cli_usage("logits", "no token ids given"); }
    st_model *m;
    st_budget *b;
    if (cli_load("logits", dir, budget, &m, &b)) { free(ids); return 1; }
    const int V = st_model_config(m)->vocab_size;
    float *lg = malloc(sizeof(float) * (size_t)n * V);
    st_state *s = NULL;
    st_status e = lg ? st_state_new(m, n, &s) : ST_ERR_NOMEM;
    int step = decode ? 1 : chunk ? (int)chunk : n;
    for (int i = 0; !e && i < n; i += step)
        e = st_forward(b, s, ids + i, n - i < step ? n - i : step, lg + (size_t)i * V, 1);
    if (e) cli_fail_st("logits", e);
    else if ((e = st_write_file_atomic(out, lg, sizeof(float) * (size_t)n * V))) cli_fail_st("logits", e);
    else rc = 0;
    st_state_free(s);
    free(lg); free(ids);
    st_budget_free(b);
    st_model_free(m);
    return rc;
}
