/* tokenizer_train.c — `starling tokenizer-train`: learn a byte-level BPE
 * tokenizer.json (Nemotron pre-tokenizer and chat special tokens) from text. */
#include "cli.h"
#include "text/bpe_train.h"
#include "util/util.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: starling tokenizer-train -i FILE [-i FILE ...] --vocab-size N -o OUT [options] [FILE ...]\n\n"
            "  -i, --input FILE       UTF-8 training text (repeatable; '-' = stdin)\n"
            "  -v, --vocab-size N     total ids: 16 special + 256 byte tokens + merges (>= 272)\n"
            "  -o, --output OUT       tokenizer.json path, or a directory to write OUT/tokenizer.json in;\n"
            "                         tokenizer_config.json and special_tokens_map.json go beside it\n"
            "      --min-frequency K  never merge a pair seen fewer than K times (default 2)\n"
            "  -q, --quiet            no statistics on stderr\n"
            "  -h, --help             this help\n\n"
            "Byte-level BPE with the Nemotron (Tekken) Split regex and ignore_merges, ids 0..15 the\n"
            "Nemotron 3 special tokens (<|im_start|>=10, <|im_end|>=11, <think>=12, </think>=13),\n"
            "ids 16..271 the bytes. Special token strings in the text are cut out, never learned.\n"
            "The output is deterministic: the same text and options give the same file.\n");
}

int cmd_tokenizer_train(int argc, char **argv) {
    const char *C = "tokenizer-train";
    const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
    if (!inputs) return cli_fail(C, "out of memory");
    int n_in = 0, quiet = 0, rc = 2;
    long vocab = 0, minf = 2;
    const char *out = NULL;
    static const struct option opts[] = {{"input", required_argument, 0, 'i'}, {"vocab-size", required_argument, 0, 'v'},
                                         {"output", required_argument, 0, 'o'}, {"min-frequency", required_argument, 0, 'm'},
                                         {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":i:v:o:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 'i': inputs[n_in++] = optarg; break;
        case 'v': if (cli_int(optarg, ST_BPE_BASE, 1 << 24, &vocab)) { rc = cli_usage(C, "bad --vocab-size '%s' (%d..%d)", optarg, ST_BPE_BASE, 1 << 24); goto done; } break;
        case 'o': out = optarg; break;
        case 'm': if (cli_int(optarg, 1, 1L << 40, &minf)) { rc = cli_usage(C, "bad --min-frequency '%s'", optarg); goto done; } break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); rc = 0; goto done;
        case ':': rc = cli_usage(C, "option %s needs a value", argv[optind - 1]); goto done;
        default: rc = cli_usage(C, "unknown option %s", argv[optind - 1]); goto done;
        }
    }
    for (int i = optind; i < argc; i++) inputs[n_in++] = argv[i];
    if (!n_in) { rc = cli_usage(C, "no input text (-i FILE)"); goto done; }
    if (!vocab) { rc = cli_usage(C, "--vocab-size N is required"); goto done; }
    if (!out) { rc = cli_usage(C, "-o OUT is required"); goto done; }
    if (minf > 0x7fffffff) minf = 0x7fffffff;

    char path[4096];
    struct stat sb;
    size_t ol = strlen(out);
    if ((stat(out, &sb) == 0 && S_ISDIR(sb.st_mode)) || (ol && out[ol - 1] == '/')) {
        if (ol && out[ol - 1] == '/') mkdir(out, 0777); /* one level, like -o DIR/ */
        if (st_pathf(path, sizeof path, "%s%stokenizer.json", out, ol && out[ol - 1] == '/' ? "" : "/") < 0) {
            rc = cli_fail(C, "output path too long"); goto done;
        }
    } else if (st_pathf(path, sizeof path, "%s", out) < 0) {
        rc = cli_fail(C, "output path too long"); goto done;
    }

    st_bpe_opts o = {(int)vocab, (int)minf};
    st_bpe_trainer *t;
    st_status st = st_bpe_new(&o, &t);
    if (st) { rc = cli_fail_st(C, st); goto done; }
    double t0 = st_time();
    for (int i = 0; i < n_in; i++) {
        size_t len;
        char *text = cli_read_text(C, inputs[i], &len);
        if (!text) { st_bpe_free(t); rc = 1; goto done; }
        st = st_bpe_feed(t, text, len);
        free(text);
        if (st) { st_err_prefix(st, "%s", inputs[i]); rc = cli_fail_st(C, st); st_bpe_free(t); goto done; }
    }
    double t1 = st_time();
    st = st_bpe_train(t);
    double t2 = st_time();
    if (!st) st = st_bpe_write(t, path);
    if (st) { rc = cli_fail_st(C, st); st_bpe_free(t); goto done; }
    st_bpe_stats s;
    st_bpe_get_stats(t, &s);
    st_bpe_free(t);
    if (!quiet) {
        fprintf(stderr, "%s: %lld bytes, %lld pieces, %lld distinct; counted in %.2f s\n", C, (long long)s.bytes,
                (long long)s.pieces, (long long)s.words, t1 - t0);
        fprintf(stderr, "%s: %d merges, vocab %d in %.2f s; %.3f bytes/token on the training text (bytes: 1.000)\n", C,
                s.merges, s.vocab, t2 - t1, s.bpe_tokens ? (double)s.bytes / (double)s.bpe_tokens : 0.0);
        if (s.vocab < vocab)
            fprintf(stderr, "%s: stopped at %d ids: no pair left with frequency >= %ld\n", C, s.vocab, minf);
        fprintf(stderr, "wrote %s\n", path);
    }
    rc = 0;
done:
    free(inputs);
    return rc;
}
