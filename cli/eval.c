/*
 * eval.c — `starling eval`: accuracy and latency of elastic budget control on
 * a task of prompts with expected answers.
 *
 * Configurations: every single budget with a sweep of thinking caps, and each
 * think -> answer budget pair (default S->L, M->L, L->M, L->S where those
 * budgets exist) in every switch mode (a transplant the widths forbid is
 * reported as n/a with the reason). Each item is one chat turn with thinking
 * on, decoded greedily from a fresh state (no prompt cache, so latencies are
 * cold and comparable); latency is the wall time of the whole request.
 * The answer is the last number in the reply (or, for a non-numeric expected
 * answer, the reply trimmed, compared case-insensitively).
 *
 * Writes OUT/eval.md (table), OUT/eval.tsv, OUT/items.tsv (per configuration
 * and item) and OUT/eval.svg (accuracy vs
 * mean latency). On a random checkpoint (the synthetic default model) the
 * accuracies are meaningless: the latencies and the mechanics are what such
 * a run checks, until a trained model ships.
 *
 * Task file: JSON lines {"prompt": "...", "answer": "..."}; or --arith N
 * generates N deterministic two-number addition questions.
 */
#include "cli.h"
#include "gen/generate.h"
#include "train/data_tasks.h"
#include "util/plot.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: starling eval -m DIR (--task FILE | --arith N) [options]\n\n"
            "  -m, --model DIR        checkpoint directory (with tokenizer.json)\n"
            "      --task FILE        JSON lines: {\"prompt\": ..., \"answer\": ...}\n"
            "      --arith N          generate N addition questions instead (deterministic)\n"
            "      --write-task FILE  also save the task used as JSON lines\n"
            "  -o, --out DIR          write eval.md, eval.tsv, eval.svg and items.tsv (one line per\n"
            "                         configuration and item: correct, latency, tokens) (default: eval-out)\n"
            "      --caps LIST        thinking caps to sweep per budget (default 0,32,128,none)\n"
            "      --pairs LIST       think->answer pairs (default S:L,M:L,L:M,L:S)\n"
            "      --pair-cap N       thinking cap for the pairs ('none' = no cap; default: the\n"
            "                         smallest positive cap of --caps, so the switch happens)\n"
            "      --budgets LIST     single budgets to sweep (default: every named budget)\n"
            "  -n, --max-tokens N     tokens per answer, thinking included (default 256)\n"
            "      --grace N          think grace (default 16)\n"
            "      --message TEXT     think message at a budget close\n"
            "      --system TEXT      system message for every item\n"
            "      --draft D          speculative decoding (greedy: the accuracy is unchanged, the\n"
            "                         latency shows the speedup): a budget or 'ngram'\n"
            "      --draft-n K        tokens drafted per step at most (default 4)\n"
            "      --repeat N         run each configuration N times per item and keep the fastest\n"
            "                         (best-of-N latency; greedy, so the answers do not change)\n"
            "                         (default 1). Items run one after another, every configuration\n"
            "                         on each, so a machine that slows down mid-run slows them all\n"
            "  -t, --threads N        kernel threads (default: all cores)\n"
            "  -q, --quiet            no progress lines\n"
            "  -h, --help             this help\n\n"
            "Accuracy means something only for a trained checkpoint; on the random default model it is\n"
            "noise, while the latencies still compare budgets, caps and switch modes honestly.\n");
}

typedef struct { char *prompt, *answer; int kind; } item; /* kind: index in g_kinds, -1 none */

/* Task kinds ("kind" in the task file, e.g. add / sort / compare), so that the
 * table can say which kind of problem the thinking helps with. */
#define MAX_KINDS 8
static char g_kinds[MAX_KINDS][32];
static int g_nkinds;

static int kind_index(const char *k) {
    if (!k) return -1;
    for (int i = 0; i < g_nkinds; i++) if (!strcmp(g_kinds[i], k)) return i;
    if (g_nkinds == MAX_KINDS || strlen(k) >= sizeof g_kinds[0]) return -1; /* counted in the total only */
    snprintf(g_kinds[g_nkinds], sizeof g_kinds[0], "%s", k);
    return g_nkinds++;
}

typedef struct {
    char label[96], family[32];
    const char *think, *answer;  /* budget names */
    int cap;                     /* -1 none */
    int pair, mode;              /* pair: think != answer */
    int ok;                      /* ran (0: n/a) */
    int front;                   /* on the accuracy-latency Pareto frontier */
    char why[256];
    double acc, lat, lat_p50, toks, think_toks, tps;
    double acc_kind[MAX_KINDS];  /* accuracy per task kind */
} row;

/* A configuration's running counts over the items. */
typedef struct {
    int live; /* the configuration can run (st_gen_check passed) */
    int right, right_k[MAX_KINDS], n_k[MAX_KINDS];
    double toks, ttoks;
    int ok_i, ntok_i; /* the current item's */
} acc_t;

static int split(char *s, char **out, int max) {
    int n = 0;
    for (char *t = strtok(s, ","); t && n < max; t = strtok(NULL, ",")) out[n++] = t;
    return n;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static item *load_task(const char *path, int *n_out) {
    char *text = cli_read_text("eval", path, NULL);
    if (!text) return NULL;
    item *it = NULL;
    int n = 0, cap = 0, line = 0;
    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n")) {
        line++;
        while (isspace((unsigned char)*l)) l++;
        if (!*l) continue;
        json_error_t je;
        json_t *j = json_loads(l, 0, &je);
        json_t *p = json_object_get(j, "prompt"), *a = json_object_get(j, "answer");
        if (!json_is_string(p) || !(json_is_string(a) || json_is_integer(a))) {
            cli_fail("eval", "%s:%d: expected {\"prompt\": string, \"answer\": string or integer}", path, line);
            json_decref(j);
            free(text);
            for (int i = 0; i < n; i++) { free(it[i].prompt); free(it[i].answer); }
            free(it);
            return NULL;
        }
        if (n == cap) { cap = cap ? 2 * cap : 64; it = realloc(it, sizeof *it * (size_t)cap); }
        char num[32];
        if (json_is_integer(a)) snprintf(num, sizeof num, "%lld", (long long)json_integer_value(a));
        it[n].prompt = strdup(json_string_value(p));
        it[n].answer = strdup(json_is_integer(a) ? num : json_string_value(a));
        json_t *k = json_object_get(j, "kind");
        it[n].kind = kind_index(json_is_string(k) ? json_string_value(k) : NULL);
        n++;
        json_decref(j);
    }
    free(text);
    if (!n) { cli_fail("eval", "%s: no items", path); free(it); return NULL; }
    *n_out = n;
    return it;
}

static item *gen_arith(int n) {
    item *it = calloc((size_t)n, sizeof *it);
    uint64_t x = 0x5eed;
    for (int i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int a = (int)((x >> 33) % 90) + 10, b = (int)((x >> 45) % 90) + 10;
        char p[128], s[16];
        snprintf(p, sizeof p, "What is %d + %d? Answer with the number only.", a, b);
        snprintf(s, sizeof s, "%d", a + b);
        it[i].prompt = strdup(p);
        it[i].answer = strdup(s);
        it[i].kind = -1;
    }
    return it;
}

/* ------------------------------------------------------------ frontier, plot */

/* r[i] is on the accuracy-latency Pareto frontier when no other configuration
   is at least as accurate and at least as fast, and better in one of the two. */
static void mark_frontier(row *r, int n) {
    for (int i = 0; i < n; i++) {
        r[i].front = r[i].ok;
        for (int j = 0; j < n && r[i].front; j++)
            if (j != i && r[j].ok && r[j].acc >= r[i].acc && r[j].lat <= r[i].lat && (r[j].acc > r[i].acc || r[j].lat < r[i].lat))
                r[i].front = 0;
    }
}

static int cmp_lat(const void *a, const void *b) {
    const row *x = *(const row *const *)a, *y = *(const row *const *)b;
    return x->lat < y->lat ? -1 : x->lat > y->lat;
}

/* Accuracy (%) against mean latency (ms): each single budget's cap sweep as a
   line, every configuration a labelled point, the Pareto frontier dashed. */
static st_status write_svg(const char *path, row *r, int n, const char *title) {
    static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};
    st_plot *p = st_plot_new(&(st_plot_axes){.title = title, .xlabel = "mean latency per item (ms)", .ylabel = "accuracy (%)",
                                              .ymin = 0, .ymax = 100});
    const row **o = calloc((size_t)n + 1, sizeof *o);
    double *x = calloc((size_t)n + 1, sizeof *x), *y = calloc((size_t)n + 1, sizeof *y);
    if (!p || !o || !x || !y) { st_plot_free(p); free(o); free(x); free(y); return ST_ERR_NOMEM; }
    char fam[16][32];
    int nf = 0;
    for (int i = 0; i < n; i++) {
        int k = 0;
        while (k < nf && strcmp(fam[k], r[i].family)) k++;
        if (k == nf && nf < 16) snprintf(fam[nf++], 32, "%s", r[i].family);
    }
    for (int k = 0; k < nf; k++) {
        const char *col = colors[k % 8];
        int m = 0;
        for (int i = 0; i < n; i++)
            if (r[i].ok && !r[i].pair && !strcmp(r[i].family, fam[k])) o[m++] = &r[i];
        qsort(o, (size_t)m, sizeof *o, cmp_lat);
        for (int i = 0; i < m; i++) { x[i] = 1000 * o[i]->lat; y[i] = 100 * o[i]->acc; }
        if (m > 1) st_plot_line(p, x, y, m, col, fam[k], 0);
        for (int i = 0; i < n; i++)
            if (r[i].ok && !strcmp(r[i].family, fam[k])) st_plot_point(p, 1000 * r[i].lat, 100 * r[i].acc, col, r[i].label);
    }
    int m = 0;
    for (int i = 0; i < n; i++) if (r[i].front) o[m++] = &r[i];
    qsort(o, (size_t)m, sizeof *o, cmp_lat);
    for (int i = 0; i < m; i++) { x[i] = 1000 * o[i]->lat; y[i] = 100 * o[i]->acc; }
    if (m) st_plot_line(p, x, y, m, "#000000", "Pareto frontier", 1);
    st_status rc = st_plot_write(p, path);
    st_plot_free(p);
    free(o); free(x); free(y);
    return rc;
}

/* ------------------------------------------------------------ main */

int cmd_eval(int argc, char **argv) {
    const char *dir = NULL, *task = NULL, *write_task = NULL, *out = "eval-out", *msg = NULL, *system = NULL;
    char caps_s[256] = "0,32,128,none", pairs_s[256] = "S:L,M:L,L:M,L:S", budgets_s[256] = "";
    long arith = 0, max_tokens = 256, grace = 16, threads = 0, pair_cap = -2, draft_n = 4, repeat_l = 1;
    const char *draft = NULL;
    st_budget *bdraft = NULL;
    int quiet = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"task", required_argument, 0, 'T'}, {"arith", required_argument, 0, 'A'},
        {"write-task", required_argument, 0, 'W'}, {"out", required_argument, 0, 'o'}, {"caps", required_argument, 0, 'C'},
        {"pairs", required_argument, 0, 'P'}, {"pair-cap", required_argument, 0, 'K'}, {"budgets", required_argument, 0, 'B'},
        {"max-tokens", required_argument, 0, 'n'}, {"grace", required_argument, 0, 'G'}, {"message", required_argument, 0, 'M'},
        {"system", required_argument, 0, 'S'}, {"threads", required_argument, 0, 't'}, {"quiet", no_argument, 0, 'q'},
        {"draft", required_argument, 0, 'D'}, {"draft-n", required_argument, 0, 'k'},
        {"repeat", required_argument, 0, 'R'}, {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
#define BAD(what) return cli_usage("eval", "bad value for %s: '%s'", what, optarg)
    while ((ch = getopt_long(argc, argv, ":m:o:n:t:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': dir = optarg; break;
        case 'T': task = optarg; break;
        case 'A': if (cli_int(optarg, 1, 1 << 20, &arith)) BAD("--arith"); break;
        case 'W': write_task = optarg; break;
        case 'o': out = optarg; break;
        case 'C': snprintf(caps_s, sizeof caps_s, "%s", optarg); break;
        case 'P': snprintf(pairs_s, sizeof pairs_s, "%s", optarg); break;
        case 'K':
            if (!strcmp(optarg, "none")) pair_cap = -1;
            else if (cli_int(optarg, 0, 1 << 24, &pair_cap)) BAD("--pair-cap");
            break;
        case 'B': snprintf(budgets_s, sizeof budgets_s, "%s", optarg); break;
        case 'n': if (cli_int(optarg, 1, 1 << 20, &max_tokens)) BAD("--max-tokens"); break;
        case 'G': if (cli_int(optarg, 0, 1 << 20, &grace)) BAD("--grace"); break;
        case 'M': msg = optarg; break;
        case 'S': system = optarg; break;
        case 'D': draft = optarg; break;
        case 'k': if (cli_int(optarg, 1, 8, &draft_n)) BAD("--draft-n"); break;
        case 'R': if (cli_int(optarg, 1, 100, &repeat_l)) BAD("--repeat"); break;
        case 't': if (cli_int(optarg, 0, 1024, &threads)) BAD("--threads"); break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage("eval", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage("eval", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("eval", "unexpected argument '%s'", argv[optind]);
    if (!dir) return cli_usage("eval", "-m DIR is required");
    if (!!task + !!arith != 1) return cli_usage("eval", "give exactly one of --task FILE or --arith N");
    char *caps_v[32], *pairs_v[32], *bud_v[32];
    int caps[32], n_caps = split(caps_s, caps_v, 32), n_pairs = split(pairs_s, pairs_v, 32);
    for (int i = 0; i < n_caps; i++) {
        long v;
        if (!strcmp(caps_v[i], "none")) caps[i] = -1;
        else if (cli_int(caps_v[i], 0, 1 << 24, &v)) return cli_usage("eval", "bad cap '%s' in --caps", caps_v[i]);
        else caps[i] = (int)v;
    }
#undef BAD
    if (pair_cap == -2) {
        pair_cap = -1;
        for (int i = 0; i < n_caps; i++)
            if (caps[i] > 0 && (pair_cap < 0 || caps[i] < pair_cap)) pair_cap = caps[i];
    }
    if (threads) st_set_threads((int)threads);
    const int repeat = (int)repeat_l;

    int n_items = 0, rc = 1;
    item *items = task ? load_task(task, &n_items) : gen_arith((int)arith);
    if (!items) return 1;
    if (arith) n_items = (int)arith;
    st_model *m = NULL;
    st_tokenizer *tok = NULL;
    st_budget *budgets[64] = {0};
    const char *bnames[64];
    int nb = 0;
    row *rows = NULL;
    int nr = 0;
    FILE *f = NULL;
    if (write_task) {
        f = fopen(write_task, "w");
        if (!f) { cli_fail("eval", "%s: %s", write_task, strerror(errno)); goto out; }
        for (int i = 0; i < n_items; i++) {
            json_t *j = json_pack("{s:s,s:s}", "prompt", items[i].prompt, "answer", items[i].answer);
            char *s = json_dumps(j, JSON_COMPACT);
            fprintf(f, "%s\n", s);
            free(s);
            json_decref(j);
        }
        fclose(f);
        f = NULL;
    }
    if (cli_load("eval", dir, NULL, &m, NULL)) goto out;
    char tp[4096];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", dir);
    st_status e = st_tokenizer_load(tp, &tok);
    if (e) { cli_fail_st("eval", e); goto out; }
    /* budgets: named ones (or --budgets), plus whatever the pairs name */
    int n_single = 0;
    if (*budgets_s) n_single = split(budgets_s, bud_v, 32);
    else {
        for (int i = 0; i < st_model_n_budgets(m) && i < 32; i++) bud_v[n_single++] = (char *)st_model_budget_name(m, i);
        if (!n_single) bud_v[n_single++] = "full";
    }
    for (int i = 0; i < n_single; i++) {
        if ((e = st_budget_resolve(m, bud_v[i], &budgets[nb]))) { cli_fail_st("eval", e); goto out; }
        bnames[nb++] = bud_v[i];
    }
    rows = calloc((size_t)(n_single * n_caps + ST_SWITCH_N_MODES * n_pairs + 1), sizeof *rows);
    for (int i = 0; i < n_single; i++)
        for (int k = 0; k < n_caps; k++) {
            row *r = &rows[nr++];
            r->think = r->answer = bnames[i];
            r->cap = caps[k];
            snprintf(r->family, sizeof r->family, "%s", bnames[i]);
            if (caps[k] < 0) snprintf(r->label, sizeof r->label, "%s, no cap", bnames[i]);
            else snprintf(r->label, sizeof r->label, "%s, cap %d", bnames[i], caps[k]);
        }
    for (int i = 0; i < n_pairs; i++) {
        char *colon = strchr(pairs_v[i], ':');
        if (!colon) { cli_usage("eval", "bad pair '%s' (THINK:ANSWER)", pairs_v[i]); rc = 2; goto out; }
        *colon = 0;
        const char *tn = pairs_v[i], *an = colon + 1;
        int have = 0;
        for (int k = 0; k < 2; k++) {
            const char *nm = k ? an : tn;
            int j = 0;
            while (j < nb && strcmp(bnames[j], nm)) j++;
            if (j == nb) {
                if (st_budget_resolve(m, nm, &budgets[nb])) continue; /* not in this checkpoint: skip the pair */
                bnames[nb++] = nm;
            }
            have++;
        }
        if (have < 2) {
            if (!quiet) fprintf(stderr, "starling eval: pair %s->%s skipped (no such budget)\n", tn, an);
            continue;
        }
        for (int md = 0; md < ST_SWITCH_N_MODES; md++) {
            row *r = &rows[nr++];
            r->think = tn;
            r->answer = an;
            r->cap = (int)pair_cap;
            r->pair = 1;
            r->mode = (st_switch_mode)md;
            snprintf(r->family, sizeof r->family, "%s->%s", tn, an);
            snprintf(r->label, sizeof r->label, "%s->%s %s", tn, an, st_switch_mode_name(r->mode));
        }
    }
    /* prompts once */
    int32_t **ids = calloc((size_t)n_items, sizeof *ids);
    int *nids = calloc((size_t)n_items, sizeof *nids);
    for (int i = 0; i < n_items; i++) {
        st_chat_msg msgs[2];
        int nm = 0;
        if (system) msgs[nm++] = (st_chat_msg){"system", system, NULL};
        msgs[nm++] = (st_chat_msg){"user", items[i].prompt, NULL};
        char *text = NULL;
        if ((e = st_chat_render(msgs, nm, 1, 1, &text)) || (e = st_tokenize(tok, text, strlen(text), 1, &ids[i], &nids[i]))) {
            free(text);
            cli_fail_st("eval", e);
            goto out2;
        }
        free(text);
    }
    if (draft && strcmp(draft, "ngram")) {
        st_status se = st_budget_resolve(m, draft, &bdraft);
        if (se) { cli_fail_st("eval", se); goto out2; }
    }
    /* lat[row][item]; gp[row]: the row's parameters (live[row] = 0: n/a) */
    double *lat = calloc((size_t)n_items * (size_t)(nr ? nr : 1), sizeof *lat);
    st_gen_params *gp = calloc((size_t)(nr ? nr : 1), sizeof *gp);
    acc_t *A = calloc((size_t)(nr ? nr : 1), sizeof *A);
    if (!lat || !gp || !A) { cli_fail("eval", "out of memory"); free(lat); free(gp); free(A); goto out2; }
    /* per item and configuration, for paired comparisons (which items a
       switch wins or loses against its thinking budget alone) */
    mkdir(out, 0755);
    char ipath[4200];
    snprintf(ipath, sizeof ipath, "%s/items.tsv", out);
    FILE *fi = fopen(ipath, "w");
    if (!fi) { cli_fail("eval", "%s: %s", ipath, strerror(errno)); goto out3; }
    fprintf(fi, "config\titem\tkind\tcorrect\tlatency_s\ttokens\n");
    for (int ri = 0; ri < nr; ri++) {
        row *r = &rows[ri];
        const st_budget *bt = NULL, *ba = NULL;
        for (int j = 0; j < nb; j++) {
            if (!strcmp(bnames[j], r->think)) bt = budgets[j];
            if (!strcmp(bnames[j], r->answer)) ba = budgets[j];
        }
        st_gen_params p = st_gen_default_params();
        p.sampling.temperature = 0;
        p.max_tokens = (int)max_tokens;
        p.thinking = 1;
        p.think_budget = r->cap;
        p.think_grace = (int)grace;
        p.think_message = msg;
        p.think_with = bt;
        p.answer_with = ba;
        p.mode = (st_switch_mode)r->mode;
        p.draft = bdraft;
        p.draft_ngram = draft && !bdraft;
        p.draft_n = (int)draft_n;
        if (st_gen_check(m, &p)) {
            snprintf(r->why, sizeof r->why, "%s", st_last_error());
            if (!quiet) fprintf(stderr, "starling eval: %-28s n/a: %s\n", r->label, r->why);
            continue;
        }
        gp[ri] = p;
        A[ri].live = 1;
    }
    /* Item by item, every configuration in turn (each `repeat` times, the
     * fastest run kept): a shared machine drifts over a long run, and this
     * order spreads the drift over every configuration alike, where row by
     * row it would favour whichever ran in a quiet spell. Greedy decoding
     * makes the repeats' outputs identical. */
    for (int i = 0; i < n_items; i++) {
        for (int ri = 0; ri < nr; ri++) {
            if (!A[ri].live) continue;
            double best = INFINITY;
            for (int rep = 0; rep < repeat; rep++) {
                st_gen *g = NULL;
                double t0 = st_time_now();
                if ((e = st_gen_new(m, tok, &gp[ri], ids[i], nids[i], 0, NULL, NULL, NULL, &g)) || (e = st_gen_run(g))) {
                    cli_fail_st("eval", e);
                    st_gen_free(g);
                    goto out3;
                }
                double dt = st_time_now() - t0;
                if (dt < best) best = dt;
                if (rep == 0) {
                    size_t n;
                    const char *c = st_gen_text(g, ST_TEXT_CONTENT, &n);
                    const st_gen_stats *s = st_gen_get_stats(g);
                    int ok = st_task_answer_correct(c, n, items[i].answer);
                    A[ri].right += ok;
                    if (items[i].kind >= 0) { A[ri].right_k[items[i].kind] += ok; A[ri].n_k[items[i].kind]++; }
                    A[ri].toks += s->completion_tokens;
                    A[ri].ttoks += s->think_tokens;
                    A[ri].ok_i = ok;
                    A[ri].ntok_i = (int)s->completion_tokens;
                }
                st_gen_free(g);
            }
            lat[(size_t)ri * n_items + i] = best;
            fprintf(fi, "%s\t%d\t%s\t%d\t%.6f\t%d\n", rows[ri].label, i,
                    items[i].kind >= 0 ? g_kinds[items[i].kind] : "-", A[ri].ok_i, best, A[ri].ntok_i);
        }
        if (!quiet && isatty(2)) fprintf(stderr, "\rstarling eval: item %d of %d", i + 1, n_items);
    }
    if (!quiet && isatty(2)) fprintf(stderr, "\n");
    for (int ri = 0; ri < nr; ri++) {
        row *r = &rows[ri];
        if (!A[ri].live) continue;
        double *L = lat + (size_t)ri * n_items, tsum = 0;
        for (int i = 0; i < n_items; i++) tsum += L[i];
        qsort(L, (size_t)n_items, sizeof *L, cmp_d);
        r->ok = 1;
        r->acc = (double)A[ri].right / n_items;
        for (int k = 0; k < g_nkinds; k++) r->acc_kind[k] = A[ri].n_k[k] ? (double)A[ri].right_k[k] / A[ri].n_k[k] : 0;
        r->lat = tsum / n_items;
        r->lat_p50 = L[n_items / 2];
        r->toks = A[ri].toks / n_items;
        r->think_toks = A[ri].ttoks / n_items;
        r->tps = A[ri].toks / (tsum > 0 ? tsum : 1e-9);
        if (!quiet)
            fprintf(stderr, "starling eval: %-28s accuracy %5.1f%%  latency %8.1f ms  %6.1f tok (%5.1f thinking)\n",
                    r->label, 100 * r->acc, 1000 * r->lat, r->toks, r->think_toks);
    }
    /* outputs */
    if (fclose(fi)) { fi = NULL; cli_fail("eval", "%s: write error", ipath); goto out3; }
    fi = NULL;
    mark_frontier(rows, nr);
    char path[4200];
    snprintf(path, sizeof path, "%s/eval.tsv", out);
    f = fopen(path, "w");
    if (!f) { cli_fail("eval", "%s: %s", path, strerror(errno)); goto out3; }
    fprintf(f, "config\tthink\tanswer\tswitch\tcap\taccuracy\tlatency_mean_s\tlatency_p50_s\ttokens\tthinking_tokens\ttok_per_s\tnote");
    for (int k = 0; k < g_nkinds; k++) fprintf(f, "\taccuracy_%s", g_kinds[k]);
    fprintf(f, "\tfrontier\n");
    for (int i = 0; i < nr; i++) {
        row *r = &rows[i];
        fprintf(f, "%s\t%s\t%s\t%s\t%d\t", r->label, r->think, r->answer,
                r->pair ? st_switch_mode_name(r->mode) : "-", r->cap);
        if (r->ok) fprintf(f, "%.4f\t%.6f\t%.6f\t%.1f\t%.1f\t%.1f\t", r->acc, r->lat, r->lat_p50, r->toks, r->think_toks, r->tps);
        else fprintf(f, "\t\t\t\t\t\tn/a: %s", r->why);
        for (int k = 0; k < g_nkinds; k++) {
            if (r->ok) fprintf(f, "\t%.4f", r->acc_kind[k]);
            else fprintf(f, "\t");
        }
        fprintf(f, "\t%d\n", r->front);
    }
    fclose(f);
    snprintf(path, sizeof path, "%s/eval.md", out);
    f = fopen(path, "w");
    if (!f) { cli_fail("eval", "%s: %s", path, strerror(errno)); goto out3; }
    for (int pass = 0; pass < 2; pass++) {
        FILE *o = pass ? f : stdout;
        fprintf(o, "# starling eval: %s, %d items%s%s\n\n", dir, n_items, task ? " from " : " (generated addition)",
                task ? task : "");
        fprintf(o, "| config | think | answer | switch | cap | accuracy | mean latency (ms) | p50 (ms) | tokens | thinking | tok/s | frontier |\n");
        fprintf(o, "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < nr; i++) {
            row *r = &rows[i];
            char cap[16];
            if (r->cap < 0) snprintf(cap, sizeof cap, "none");
            else snprintf(cap, sizeof cap, "%d", r->cap);
            fprintf(o, "| %s | %s | %s | %s | %s | ", r->label, r->think, r->answer,
                    r->pair ? st_switch_mode_name(r->mode) : "-", cap);
            if (r->ok)
                fprintf(o, "%.1f%% | %.1f | %.1f | %.1f | %.1f | %.1f | %s |\n", 100 * r->acc, 1000 * r->lat, 1000 * r->lat_p50,
                        r->toks, r->think_toks, r->tps, r->front ? "yes" : "");
            else fprintf(o, "n/a | | | | | %s | |\n", r->why);
        }
        if (g_nkinds) {
            fprintf(o, "\nAccuracy by kind of problem:\n\n| config |");
            for (int k = 0; k < g_nkinds; k++) fprintf(o, " %s |", g_kinds[k]);
            fprintf(o, "\n|---|");
            for (int k = 0; k < g_nkinds; k++) fprintf(o, "---|");
            fprintf(o, "\n");
            for (int i = 0; i < nr; i++) {
                if (!rows[i].ok) continue;
                fprintf(o, "| %s |", rows[i].label);
                for (int k = 0; k < g_nkinds; k++) fprintf(o, " %.1f%% |", 100 * rows[i].acc_kind[k]);
                fprintf(o, "\n");
            }
        }
        fprintf(o, "\nGreedy decoding, thinking on, max %ld tokens, grace %ld, %d threads, cold state per item (no prompt "
                   "cache).\nAccuracy is meaningful only for a trained checkpoint: on a random model (such as the synthetic "
                   "default) it is noise; latencies are real.\n", max_tokens, grace, st_get_threads());
    }
    fclose(f);
    f = NULL;
    snprintf(path, sizeof path, "%s/eval.svg", out);
    char title[512];
    snprintf(title, sizeof title, "starling eval: accuracy vs latency (%d items)", n_items);
    if ((e = write_svg(path, rows, nr, title))) { cli_fail_st("eval", e); goto out3; }
    if (!quiet) fprintf(stderr, "starling eval: wrote %s/eval.md, eval.tsv, eval.svg, items.tsv\n", out);
    rc = 0;
out3:
    free(lat);
    free(gp);
    free(A);
    if (fi) fclose(fi);
out2:
    for (int i = 0; i < n_items; i++) free(ids[i]);
    free(ids);
    free(nids);
out:
    for (int i = 0; i < n_items; i++) { free(items[i].prompt); free(items[i].answer); }
    free(items);
    free(rows);
    for (int i = 0; i < nb; i++) st_budget_free(budgets[i]);
    st_budget_free(bdraft);
    st_tokenizer_free(tok);
    st_model_free(m);
    return rc;
}
