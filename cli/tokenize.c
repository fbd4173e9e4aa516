/*
 * cli/tokenize.c — `starling tokenize`: text -> token ids, or ids -> text
 * (--decode), with a Hugging Face tokenizer.json.
 */
#include "cli.h"
#include "starling.h"
#include "text/tokenizer_internal.h"
#include "util/util.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_tokenize(int argc, char **argv);

static const char USAGE[] =
    "usage: starling tokenize (-m DIR | --tokenizer FILE) (-p TEXT | -f FILE) [options]\n"
    "\n"
    "Encode text with a Hugging Face tokenizer.json and print the token ids on one\n"
    "line, separated by spaces. Special tokens written in the text (<|im_start|>, ...)\n"
    "become their ids; nothing is added unless --add-special.\n"
    "\n"
    "  -m, --model DIR        use DIR/tokenizer.json\n"
    "      --tokenizer FILE   use FILE\n"
    "  -p, --prompt TEXT      the text to encode (with --decode: the ids)\n"
    "  -f, --file FILE        read the text (or the ids) from FILE; '-' is stdin\n"
    "      --add-special      add what the tokenizer's post_processor adds (e.g. <s> for\n"
    "                         Llama 2); when it adds nothing, follow add_bos_token /\n"
    "                         add_eos_token in tokenizer_config.json beside the file\n"
    "      --no-special       treat special tokens in the text as plain text;\n"
    "                         with --decode, leave special tokens out of the output\n"
    "      --bin OUT          write the ids to OUT as little-endian uint32 (the token\n"
    "                         files starling train reads) instead of printing them\n"
    "      --append-eos       with --bin: end with the tokenizer's EOS id (</s>)\n"
    "      --decode           read token ids (separated by spaces, commas or newlines)\n"
    "                         and print the text exactly, with no newline added\n"
    "  -h, --help             show this help\n";

static int fail(const char *msg) {
    fprintf(stderr, "starling tokenize: %s\n", msg);
    return 1;
}
static int usage_error(const char *msg) {
    fprintf(stderr, "starling tokenize: %s\n(see 'starling tokenize --help')\n", msg);
    return 2;
}

/* Token id of tokenizer_config.json's bos_token / eos_token when its
 * add_bos_token / add_eos_token is true; -1 otherwise. */
static int32_t config_token(const st_tokenizer *t, const char *tok_path, const char *flag, const char *key) {
    const char *slash = strrchr(tok_path, '/');
    size_t dl = slash ? (size_t)(slash - tok_path + 1) : 0;
    char *cfg = malloc(dl + sizeof "tokenizer_config.json");
    if (!cfg) return -1;
    memcpy(cfg, tok_path, dl);
    strcpy(cfg + dl, "tokenizer_config.json");
    json_t *j = json_load_file(cfg, 0, NULL);
    free(cfg);
    int32_t id = -1;
    if (j && json_is_true(json_object_get(j, flag))) {
        json_t *v = json_object_get(j, key);
        const char *s = json_is_string(v) ? json_string_value(v) : json_string_value(json_object_get(v, "content"));
        if (s) id = st_token_id(t, s);
    }
    json_decref(j);
    return id;
}

/* The ids as a flat uint32 LE file (docs/training.md), written atomically. */
static int write_bin(const st_tokenizer *t, const char *out, const int32_t *ids, int n, int append_eos) {
    int32_t eos = append_eos ? st_token_id(t, "</s>") : -1;
    if (append_eos && eos < 0) return fail("--append-eos: the tokenizer has no </s> token");
    size_t m = (size_t)n + (eos >= 0);
    unsigned char *b = malloc(m * 4 + 1);
    if (!b) return fail("out of memory");
    for (size_t i = 0; i < m; i++) {
        uint32_t v = (uint32_t)(i < (size_t)n ? ids[i] : eos);
        b[4 * i] = (unsigned char)v; b[4 * i + 1] = (unsigned char)(v >> 8);
        b[4 * i + 2] = (unsigned char)(v >> 16); b[4 * i + 3] = (unsigned char)(v >> 24);
    }
    st_status rc = st_write_file_atomic(out, b, m * 4);
    free(b);
    if (rc) return fail(st_last_error());
    fprintf(stderr, "wrote %zu tokens to %s\n", m, out);
    return 0;
}

static int encode(const st_tokenizer *t, const char *tok_path, const char *text, size_t len,
                  int add_special, int parse_special, const char *bin, int append_eos) {
    int32_t *ids = NULL;
    int n = 0;
    if (st_tokenize(t, text, len, parse_special, &ids, &n)) return fail(st_last_error());
    if (bin) {
        int rc = write_bin(t, bin, ids, n, append_eos);
        free(ids);
        return rc;
    }
    const int32_t *pre = NULL, *suf = NULL;
    int npre = 0, nsuf = 0;
    int32_t bos = -1, eos = -1;
    if (add_special) {
        if (st_tok_affixes(t, &pre, &npre, &suf, &nsuf)) { free(ids); return fail(st_last_error()); }
        if (!npre && !nsuf) {
            bos = config_token(t, tok_path, "add_bos_token", "bos_token");
            eos = config_token(t, tok_path, "add_eos_token", "eos_token");
        }
    }
    int k = 0;
#define EMIT(x) printf(k++ ? " %d" : "%d", (int)(x))
    for (int i = 0; i < npre; i++) EMIT(pre[i]);
    if (bos >= 0) EMIT(bos);
    for (int i = 0; i < n; i++) EMIT(ids[i]);
    if (eos >= 0) EMIT(eos);
    for (int i = 0; i < nsuf; i++) EMIT(suf[i]);
#undef EMIT
    putchar('\n');
    free(ids);
    return fflush(stdout) == 0 ? 0 : fail("cannot write to stdout");
}

static int decode(const st_tokenizer *t, const char *text, int skip_special) {
    size_t cap = 256;
    int n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return fail("out of memory");
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',' || *p == '[' || *p == ']') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX ||
            (*end && !strchr(" \t\r\n,[]", *end))) {
            int l = (int)strcspn(p, " \t\r\n,[]");
            fprintf(stderr, "starling tokenize: --decode: \"%.*s\" is not a token id\n", l > 40 ? 40 : l, p);
            free(ids);
            return 1;
        }
        if ((size_t)n == cap) {
            int32_t *q = realloc(ids, (cap *= 2) * sizeof *q);
            if (!q) { free(ids); return fail("out of memory"); }
            ids = q;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    char *out = NULL;
    st_status st = st_tok_decode(t, ids, n, skip_special, &out);
    free(ids);
    if (st) return fail(st_last_error());
    fputs(out, stdout);
    free(out);
    return fflush(stdout) == 0 ? 0 : fail("cannot write to stdout");
}

int cmd_tokenize(int argc, char **argv) {
    enum { O_TOKENIZER = 256, O_ADD_SPECIAL, O_NO_SPECIAL, O_DECODE, O_BIN, O_APPEND_EOS };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"prompt", required_argument, 0, 'p'},
        {"file", required_argument, 0, 'f'},
        {"add-special", no_argument, 0, O_ADD_SPECIAL},
        {"no-special", no_argument, 0, O_NO_SPECIAL},
        {"decode", no_argument, 0, O_DECODE},
        {"bin", required_argument, 0, O_BIN},
        {"append-eos", no_argument, 0, O_APPEND_EOS},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *dir = NULL, *file = NULL, *prompt = NULL, *in_path = NULL;
    const char *bin = NULL;
    int add_special = 0, no_special = 0, do_decode = 0, append_eos = 0, c;
    optind = 0; /* full getopt reset: main may have parsed its own options */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:p:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': dir = optarg; break;
        case O_TOKENIZER: file = optarg; break;
        case 'p': prompt = optarg; break;
        case 'f': in_path = optarg; break;
        case O_ADD_SPECIAL: add_special = 1; break;
        case O_NO_SPECIAL: no_special = 1; break;
        case O_DECODE: do_decode = 1; break;
        case O_BIN: bin = optarg; break;
        case O_APPEND_EOS: append_eos = 1; break;
        case 'h': fputs(USAGE, stdout); return 0;
        case ':': {
            char m[96];
            snprintf(m, sizeof m, "option %s needs a value", argv[optind - 1]);
            return usage_error(m);
        }
        default: {
            char m[96];
            snprintf(m, sizeof m, "unknown option %s", argv[optind - 1]);
            return usage_error(m);
        }
        }
    }
    if (optind < argc) {
        char m[96];
        snprintf(m, sizeof m, "unexpected argument \"%.40s\"", argv[optind]);
        return usage_error(m);
    }
    if (!!dir + !!file != 1) return usage_error("give exactly one of -m DIR and --tokenizer FILE");
    if (!!prompt + !!in_path != 1) return usage_error("give exactly one of -p TEXT and -f FILE");
    if (do_decode && add_special) return usage_error("--add-special does not apply to --decode");
    if (do_decode && bin) return usage_error("--bin does not apply to --decode");
    if (bin && add_special) return usage_error("--bin writes the text's ids; use --append-eos for an end marker");
    if (append_eos && !bin) return usage_error("--append-eos needs --bin");

    char *tok_path = NULL;
    if (dir) {
        tok_path = malloc(strlen(dir) + sizeof "/tokenizer.json");
        if (!tok_path) return fail("out of memory");
        sprintf(tok_path, "%s/tokenizer.json", dir);
    } else {
        tok_path = strdup(file);
        if (!tok_path) return fail("out of memory");
    }
    char *buf = NULL;
    size_t len = 0;
    if (in_path) {
        if (!(buf = cli_read_text("tokenize", in_path, &len))) { free(tok_path); return 1; }
    } else {
        len = strlen(prompt);
    }
    const char *text = buf ? buf : prompt;

    st_tokenizer *t = NULL;
    int rc;
    if (st_tokenizer_load(tok_path, &t)) rc = fail(st_last_error());
    else if (do_decode) rc = decode(t, text, no_special);
    else rc = encode(t, tok_path, text, len, add_special, !no_special, bin, append_eos);
    st_tokenizer_free(t);
    free(buf);
    free(tok_path);
    return rc;
}
