/* tasks.c — `starling tasks`: synthetic reasoning problems (addition with
 * carries, sorting, comparison, code words) as chat JSONL with <think> traces,
 * as eval items, or rendered through the Nemotron 3 chat template; and the
 * code family's codebook as plain training text. */
#include "cli.h"
#include "train/data_tasks.h"
#include "util/util.h"

#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: starling tasks --kind add|sort|compare|mix|code -n N [--seed S] [options] -o FILE\n"
            "       starling tasks --codebook -n PASSES [--seed S] -o FILE\n\n"
            "  -k, --kind KIND     add (multi-digit, carry written per column), sort (selection, step\n"
            "                      by step), compare (digit by digit), mix (those three at random),\n"
            "                      code (think: add two 2-3 digit numbers; answer: the sum's word\n"
            "                      from a fixed codebook, which only memorised knowledge gives)\n"
            "      --codebook      write the codebook's facts instead, one per line (\"The code word\n"
            "                      for 417 is rain.\"), -n passes over all of them, each pass in its\n"
            "                      own shuffled order: the text a model memorises them from\n"
            "  -n, --count N       number of problems\n"
            "  -s, --seed S        stream seed (default 1)\n"
            "      --split SPLIT   train (default) or eval: held-out problems, chosen by a hash of the\n"
            "                      problem itself, so no eval problem is ever generated for train;\n"
            "                      eval problems are also unique within the file\n"
            "      --no-think      assistant turns '<think>\\n</think>\\nANSWER' (no written reasoning)\n"
            "      --think-only    assistant turns '<think>\\nREASONING\\n</think>\\n' (the answer left out: to\n"
            "                      teach a budget the procedure but not the knowledge of the answer)\n"
            "      --digits LO-HI  operand digits for add / compare (default add 4-6, compare 3-8)\n"
            "                      (code always uses 2-3 digits and sums below the codebook's size)\n"
            "      --render        write plain training text: each conversation through the Nemotron 3\n"
            "                      chat template (st_chat_render), one after another\n"
            "  -o, --output FILE   output ('-' = stdout, the default)\n"
            "  -h, --help          this help\n\n"
            "JSONL lines: {\"id\", \"kind\", \"split\", \"prompt\", \"answer\", \"messages\": [user, assistant]};\n"
            "the prompt/answer fields are what `starling eval --task FILE` reads, so an eval file\n"
            "measures accuracy directly (--caps 0,none compares no thinking with thinking).\n");
}

/* open-addressing set of problem keys (eval files hold each problem once) */
typedef struct { uint64_t *k; size_t cap, n; } kset;
static int kset_add(kset *s, uint64_t key) { /* 1 added, 0 present, -1 oom */
    if ((s->n + 1) * 2 > s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 1024;
        uint64_t *nk = calloc(nc, sizeof *nk);
        if (!nk) return -1;
        for (size_t i = 0; i < s->cap; i++)
            if (s->k[i]) { size_t j = s->k[i] & (nc - 1); while (nk[j]) j = (j + 1) & (nc - 1); nk[j] = s->k[i]; }
        free(s->k); s->k = nk; s->cap = nc;
    }
    key |= 1; /* 0 marks empty; the low bit is not needed to tell problems apart here */
    size_t j = key & (s->cap - 1);
    for (; s->k[j]; j = (j + 1) & (s->cap - 1)) if (s->k[j] == key) return 0;
    s->k[j] = key; s->n++;
    return 1;
}

/* PASSES shuffled passes over the codebook's facts (Fisher-Yates per pass). */
static int write_codebook(const char *C, long passes, uint64_t seed, const char *out) {
    FILE *f = strcmp(out, "-") ? fopen(out, "wb") : stdout;
    if (!f) return cli_fail(C, "%s: cannot open for writing", out);
    int order[ST_CODEBOOK_N];
    uint64_t s = seed ^ 0xc0deb00cull;
    for (long p = 0; p < passes; p++) {
        for (int i = 0; i < ST_CODEBOOK_N; i++) order[i] = i;
        for (int i = ST_CODEBOOK_N - 1; i > 0; i--) {
            int j = (int)(st_splitmix64(&s) % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j]; order[j] = t;
        }
        for (int i = 0; i < ST_CODEBOOK_N; i++) {
            char fact[96];
            st_status st = st_codebook_fact(order[i], fact, sizeof fact);
            if (st) { if (f != stdout) fclose(f); return cli_fail_st(C, st); }
            fputs(fact, f);
            fputc('\n', f);
        }
    }
    if (f != stdout) { if (fclose(f)) return cli_fail(C, "%s: write error", out); }
    else if (fflush(f)) return cli_fail(C, "write error on stdout");
    return 0;
}

int cmd_tasks(int argc, char **argv) {
    const char *C = "tasks", *out = "-", *kind_s = NULL, *split_s = "train", *digits = NULL;
    long n = -1, seed = 1;
    int think = 1, render = 0, codebook = 0, think_only = 0;
    static const struct option opts[] = {{"kind", required_argument, 0, 'k'}, {"count", required_argument, 0, 'n'},
                                         {"seed", required_argument, 0, 's'}, {"split", required_argument, 0, 'S'},
                                         {"no-think", no_argument, 0, 'T'}, {"digits", required_argument, 0, 'd'},
                                         {"render", no_argument, 0, 'r'}, {"output", required_argument, 0, 'o'},
                                         {"codebook", no_argument, 0, 'C'}, {"think-only", no_argument, 0, 'A'},
                                         {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":k:n:s:o:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'k': kind_s = optarg; break;
        case 'n': if (cli_int(optarg, 0, 100000000L, &n)) return cli_usage(C, "bad -n '%s'", optarg); break;
        case 's': if (cli_int(optarg, 0, 0x7fffffffffffffffL, &seed)) return cli_usage(C, "bad --seed '%s'", optarg); break;
        case 'S': split_s = optarg; break;
        case 'T': think = 0; break;
        case 'd': digits = optarg; break;
        case 'r': render = 1; break;
        case 'C': codebook = 1; break;
        case 'A': think_only = 1; break;
        case 'o': out = optarg; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage(C, "option %s needs a value", argv[optind - 1]);
        default: return cli_usage(C, "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage(C, "unexpected argument '%s'", argv[optind]);
    if (codebook) {
        if (kind_s || render || !think || think_only || digits || strcmp(split_s, "train"))
            return cli_usage(C, "--codebook takes only -n, --seed and -o");
        if (n < 0) return cli_usage(C, "-n PASSES is required");
        return write_codebook(C, n, (uint64_t)seed, out);
    }
    if (!kind_s) return cli_usage(C, "--kind is required (add, sort, compare, mix, code)");
    if (think_only && !think) return cli_usage(C, "--think-only and --no-think exclude each other");
    if (n < 0) return cli_usage(C, "-n N is required");
    st_task_opts o = {0};
    int k = st_task_kind_parse(kind_s);
    if (k < 0) return cli_usage(C, "unknown --kind '%s' (add, sort, compare, mix, code)", kind_s);
    o.kind = (st_task_kind)k;
    if (!strcmp(split_s, "eval")) o.eval_split = 1;
    else if (strcmp(split_s, "train")) return cli_usage(C, "unknown --split '%s' (train, eval)", split_s);
    o.seed = (uint64_t)seed;
    if (digits) {
        int lo, hi, used = 0;
        if (sscanf(digits, "%d-%d%n", &lo, &hi, &used) != 2 || digits[used] || lo < 1 || hi > 9 || lo > hi)
            return cli_usage(C, "bad --digits '%s' (LO-HI, 1 <= LO <= HI <= 9)", digits);
        o.min_digits = lo; o.max_digits = hi;
    }
    FILE *f = strcmp(out, "-") ? fopen(out, "wb") : stdout;
    if (!f) return cli_fail(C, "%s: cannot open for writing", out);
    kset seen = {0};
    int rc = 0;
    uint64_t idx = 0, misses = 0;
    for (long i = 0; i < n && !rc;) {
        st_task t;
        st_status st = st_task_gen(&o, idx++, &t);
        if (st) { rc = cli_fail_st(C, st); break; }
        if (o.eval_split) {
            int a = kset_add(&seen, t.key);
            if (a < 0) { st_task_free(&t); rc = cli_fail(C, "out of memory"); break; }
            if (a == 0) {
                st_task_free(&t);
                if (++misses > 1000 + 100 * (uint64_t)n) { rc = cli_fail(C, "only %ld distinct eval problems found for these options", i); break; }
                continue;
            }
        }
        char *asst = NULL;
        if (think_only) t.answer[0] = 0; /* the turn ends with the thinking */
        if ((st = st_task_assistant(&t, think, &asst))) { st_task_free(&t); rc = cli_fail_st(C, st); break; }
        if (render) {
            st_chat_msg m[2] = {{.role = "user", .content = t.prompt}, {.role = "assistant", .content = asst}};
            char *s = NULL;
            if ((st = st_chat_render(m, 2, 0, 1, &s))) rc = cli_fail_st(C, st);
            else fputs(s, f);
            free(s);
        } else {
            json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "id", t.id, "kind",
                                  st_task_kind_name(t.kind), "split", o.eval_split ? "eval" : "train", "prompt",
                                  t.prompt, "answer", t.answer, "messages", "role", "user", "content", t.prompt, "role",
                                  "assistant", "content", asst);
            char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
            json_decref(j);
            if (!s) rc = cli_fail(C, "out of memory");
            else { fputs(s, f); fputc('\n', f); }
            free(s);
        }
        free(asst);
        st_task_free(&t);
        i++;
    }
    free(seen.k);
    if (f != stdout) { if (fclose(f) && !rc) rc = cli_fail(C, "%s: write error", out); }
    else if (fflush(f) && !rc) rc = cli_fail(C, "write error on stdout");
    return rc;
}
