/*
 * rank.c — `starling rank`: forward-only importance scores of every elastic
 * axis over calibration tokens, then a copy of the parent with every axis
 * permuted into descending importance (src/elastic/rank.h; docs/elastic.md §1) and
 * OUT/importance.json. The permuted model computes what the parent computes;
 * budgets of it then keep the most important units.
 */
#include "cli.h"
#include "elastic/rank.h"
#include "train/train.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: starling rank -m PARENT --calib DATA -o OUT [options]\n\n"
            "  -m, --model PARENT     parent checkpoint (F32, BF16 or F16 weights)\n"
            "  -c, --calib DATA       calibration data: a .bin file of little-endian uint32 token ids\n"
            "                         (starling tokenize --bin) or text, tokenised with\n"
            "                         PARENT/tokenizer.json\n"
            "  -o, --output OUT       output checkpoint directory (must not exist unless --force)\n"
            "  -n, --tokens N         calibration tokens (default 65536), taken as sequences of\n"
            "                         --seq tokens spread evenly over DATA\n"
            "      --seq T            tokens per sequence (default 256)\n"
            "      --batch B          sequences per forward pass (default 8)\n"
            "      --layer-tokens N   tokens for the layer importance (default 4096; 0: skip it)\n"
            "  -t, --threads N        threads (default: all cores)\n"
            "  -f, --force            replace an existing OUT\n"
            "  -q, --quiet            no progress bar\n\n"
            "Scores (training forward, full width): hidden channels by |RMSNorm output| over every\n"
            "norm; Mamba head channels and heads (within each group) by the x-part of in_proj;\n"
            "attention query heads (within each KV group) by their outputs; FFN, shared-expert and\n"
            "expert neurons by their relu2 activation; experts by REAP. Every tied dimension is\n"
            "permuted into descending score order (the model computes the same logits).\n"
            "Layer importance (normalised logit MSE with the layer skipped) is reported, depth is\n"
            "not permuted. OUT holds the permuted F32 checkpoint, the tokenizer files and\n"
            "importance.json (scores in the new order, the permutation of every axis).\n");
}

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Text → ids through DIR/tokenizer.json, reading at most max_bytes (cut at
 * whitespace, so no UTF-8 character is split). Prints errors; 0 ok. */
static int text_ids(const char *path, const char *dir, int vocab, size_t max_bytes, int32_t **ids, size_t *n) {
    size_t len = 0;
    char *text = cli_read_text("rank", path, &len);
    if (!text) return 1;
    if (len == 0) { free(text); return cli_fail("rank", "%s is empty", path); }
    if (len > max_bytes) {
        size_t cut = max_bytes;
        while (cut > 0 && text[cut] != ' ' && text[cut] != '\n' && text[cut] != '\t' && text[cut] != '\r') cut--;
        len = cut ? cut : max_bytes;
        text[len] = 0;
    }
    char tp[4200];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", dir);
    st_tokenizer *tok;
    st_status rc = st_tokenizer_load(tp, &tok);
    if (rc) {
        free(text);
        return cli_fail("rank", "%s (a text --calib needs the parent's tokenizer; or give a .bin of token ids)",
                        st_last_error());
    }
    int32_t *v = NULL;
    int nv = 0;
    rc = st_tokenize(tok, text, len, 1, &v, &nv);
    free(text);
    if (rc) { st_tokenizer_free(tok); return cli_fail_st("rank", rc); }
    for (int i = 0; i < nv; i++)
        if (v[i] < 0 || v[i] >= vocab) {
            char raw[32], b[130] = ""; /* the token's bytes, non-ASCII as \xHH */
            int k = st_token_bytes(tok, v[i], raw, (int)sizeof raw);
            for (int j = 0, o = 0; j < k && o < (int)sizeof b - 5; j++) {
                unsigned char ch = (unsigned char)raw[j];
                o += snprintf(b + o, sizeof b - (size_t)o, ch >= 32 && ch < 127 ? "%c" : "\\x%02x", ch);
            }
            cli_fail("rank", "%s: token %d is id %d ('%s'), outside the model's vocabulary [0, %d): tokenizer and model "
                     "disagree", path, i, v[i], b, vocab);
            free(v);
            st_tokenizer_free(tok);
            return 1;
        }
    st_tokenizer_free(tok);
    if (nv == 0) { free(v); return cli_fail("rank", "%s has no tokens", path); }
    *ids = v;
    *n = (size_t)nv;
    return 0;
}

int cmd_rank(int argc, char **argv) {
    const char *dir = NULL, *calib = NULL, *out = NULL;
    long tokens = 65536, T = 256, B = 8, layer_tokens = 4096, threads = -1;
    int force = 0, quiet = 0;
    enum { O_SEQ = 256, O_BATCH, O_LAYER };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"calib", required_argument, 0, 'c'}, {"output", required_argument, 0, 'o'},
        {"tokens", required_argument, 0, 'n'}, {"seq", required_argument, 0, O_SEQ},
        {"batch", required_argument, 0, O_BATCH}, {"layer-tokens", required_argument, 0, O_LAYER},
        {"threads", required_argument, 0, 't'}, {"force", no_argument, 0, 'f'}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":m:c:o:n:t:fqh", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': dir = optarg; break;
        case 'c': calib = optarg; break;
        case 'o': out = optarg; break;
        case 'n': if (cli_int(optarg, 1, 1L << 31, &tokens)) return cli_usage("rank", "bad --tokens '%s'", optarg); break;
        case O_SEQ: if (cli_int(optarg, 1, 1 << 20, &T)) return cli_usage("rank", "bad --seq '%s'", optarg); break;
        case O_BATCH: if (cli_int(optarg, 1, 1 << 16, &B)) return cli_usage("rank", "bad --batch '%s'", optarg); break;
        case O_LAYER:
            if (cli_int(optarg, 0, 1L << 31, &layer_tokens)) return cli_usage("rank", "bad --layer-tokens '%s'", optarg);
            break;
        case 't': if (cli_int(optarg, 0, 4096, &threads)) return cli_usage("rank", "bad --threads '%s'", optarg); break;
        case 'f': force = 1; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage("rank", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage("rank", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("rank", "unexpected argument '%s'", argv[optind]);
    if (!dir || !calib || !out) return cli_usage("rank", "-m PARENT, --calib DATA and -o OUT are required");
    struct stat sb;
    if (!force && stat(out, &sb) == 0) /* before the long computation */
        return cli_fail("rank", "%s already exists (use --force to replace it)", out);
    if (threads >= 0) st_set_threads((int)threads);
    double t0 = st_time_now();

    st_model *pm = NULL;
    if (cli_load("rank", dir, NULL, &pm, NULL)) return 1;
    const st_config *cfg = st_model_config(pm);
    int ret = 1;
    st_status rc;
    st_tmodel *m = NULL;
    st_rank *r = NULL;
    int32_t *text = NULL, *seqs = NULL, *lseqs = NULL;
    st_tokfile tf = {0};
    const uint32_t *bin = NULL; /* the ids, from the .bin map or the tokenised text */
    size_t n_avail = 0;
    if (has_suffix(calib, ".bin")) {
        if ((rc = st_tokfile_open(&tf, calib, cfg->vocab_size))) { cli_fail_st("rank", rc); goto done; }
        bin = tf.ids;
        n_avail = tf.n;
    } else {
        size_t max_bytes = (size_t)tokens * 16 + 4096; /* enough text for the tokens wanted */
        if (text_ids(calib, dir, cfg->vocab_size, max_bytes, &text, &n_avail)) goto done;
        bin = (const uint32_t *)text; /* ids checked non-negative */
    }
    if (n_avail < (size_t)T) {
        cli_fail("rank", "%s has %zu tokens, fewer than one sequence of %ld (--seq)", calib, n_avail, T);
        goto done;
    }
    /* n_seq sequences of T tokens, spread evenly over the data */
    size_t want = (size_t)tokens < n_avail ? (size_t)tokens : n_avail;
    int n_seq = (int)(want / (size_t)T);
    if (n_seq < 1) n_seq = 1;
    seqs = malloc(sizeof(int32_t) * (size_t)n_seq * (size_t)T); /* [n_seq][T] */
    if (!seqs) { cli_fail("rank", "out of memory for %d x %ld calibration tokens", n_seq, T); goto done; }
    for (int s = 0; s < n_seq; s++) {
        size_t start = n_seq > 1 ? (size_t)s * (n_avail - (size_t)T) / (size_t)(n_seq - 1) : 0;
        for (long t = 0; t < T; t++) seqs[(size_t)s * T + t] = (int32_t)bin[start + (size_t)t];
    }
    if (!quiet)
        fprintf(stderr, "rank: %s (%s), %d sequences x %ld tokens from %s (%zu tokens)\n", dir, cfg->pattern, n_seq, T,
                calib, n_avail);

    if ((rc = st_tmodel_new(cfg, &m)) || (rc = st_tmodel_from_model(m, pm)) || (rc = st_rank_new(cfg, &r))) {
        cli_fail_st("rank", rc);
        goto done;
    }
    if ((rc = st_rank_score(r, m, seqs, n_seq, (int)T, (int)B, !quiet))) { cli_fail_st("rank", rc); goto done; }
    double t1 = st_time_now();
    if (layer_tokens > 0) { /* evenly chosen sequences among the calibration ones */
        int n_li = (int)(layer_tokens / T);
        if (n_li < 1) n_li = 1;
        if (n_li > n_seq) n_li = n_seq;
        lseqs = malloc(sizeof(int32_t) * (size_t)n_li * (size_t)T); /* [n_li][T] */
        if (!lseqs) { cli_fail("rank", "out of memory"); goto done; }
        for (int i = 0; i < n_li; i++)
            memcpy(lseqs + (size_t)i * T, seqs + (size_t)((long)i * n_seq / n_li) * T, sizeof(int32_t) * (size_t)T);
        if ((rc = st_rank_layers(r, pm, lseqs, n_li, (int)T, !quiet))) { cli_fail_st("rank", rc); goto done; }
    }
    double t2 = st_time_now();
    if ((rc = st_rank_apply(m, r)) || (rc = st_rank_save(m, r, out, dir, force))) { cli_fail_st("rank", rc); goto done; }

    if (layer_tokens > 0) {
        printf("layer importance (normalised logit MSE with the layer skipped, %ld tokens):\n", r->n_layer_tokens);
        for (int l = 0; l < cfg->n_layers; l++) printf("  layer %2d  %c  %.6g\n", l, cfg->pattern[l], r->L[l].importance);
    }
    if (!quiet)
        fprintf(stderr, "ranked %ld tokens in %.1f s (load + scores %.1f s, layer importance %.1f s) -> %s\n", r->n_tokens,
                st_time_now() - t0, t1 - t0, t2 - t1, out);
    ret = 0;
done:
    st_rank_free(r);
    st_tmodel_free(m);
    free(seqs); free(lseqs); free(text);
    if (tf.map) st_tokfile_close(&tf);
    st_model_free(pm);
    return ret;
}
