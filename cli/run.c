/*
 * run.c — `starling run`: stream generated text to stdout at any budget.
 * Prompt as plain text (special tokens written in it are recognised) or as a
 * chat turn rendered with the Nemotron 3 template (--chat; thinking on unless
 * --no-think). Elastic budget control: a think budget (--think-budget, grace,
 * message) and thinking at one budget, answering at another (--think-with,
 * --answer-with, --switch exact|transplant|reread); see src/gen/generate.h. The text
 * goes to stdout as generated (UTF-8, invalid bytes as U+FFFD, "</think>"
 * between thought and answer); tokens and time per phase go to stderr.
 */
#include "cli.h"
#include "gen/generate.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: starling run -m DIR (-p TEXT | -f FILE) [options]\n\n"
            "  -m, --model DIR        Hugging Face checkpoint directory (with tokenizer.json)\n"
            "  -b, --budget B         budget: name (e.g. S), 'full', 'k=v,...' widths or @file.json\n"
            "                         (default: the checkpoint's default budget, else full)\n"
            "      --budget-file F    budget widths from a JSON file (config key names)\n"
            "  -p, --prompt TEXT      prompt text\n"
            "  -f, --file FILE        read the prompt from FILE ('-' = stdin)\n"
            "  -n, --n-predict N      tokens to generate (default 256)\n"
            "      --chat             wrap the prompt as a user turn in the chat template\n"
            "      --system TEXT      system message (with --chat)\n"
            "      --no-think         chat with reasoning off (<think></think>)\n"
            "      --temp T           temperature, 0 = greedy (default 0.8)\n"
            "      --top-k K          top-k (default 40, 0 = off)\n"
            "      --top-p P          nucleus sampling (default 0.95, 1 = off)\n"
            "      --min-p P          min-p relative to the best token (default 0.05, 0 = off)\n"
            "      --repeat-penalty R repetition penalty (default 1.0 = off)\n"
            "      --repeat-last-n N  window of the penalty (default 64)\n"
            "  -s, --seed S           sampling seed (default: random, printed with -v)\n"
            "  -t, --threads N        threads (default: all cores)\n"
            "  -c, --ctx N            context limit (default: the model's maximum)\n"
            "      --ignore-eos       do not stop at end-of-sequence tokens\n"
            "\nthinking budget and budget switch (with --chat):\n"
            "      --think-budget N   at most N sampled thinking tokens, then close the thought\n"
            "      --think-grace N    past the cap, wait up to N tokens for a line break (default 16)\n"
            "      --think-message T  text inserted before a budget close (e.g. 'Time to answer.')\n"
            "      --think-with B     budget for the prompt and the thinking\n"
            "      --answer-with B    budget for the answer (default: --budget)\n"
            "      --switch MODE      exact (answer budget re-reads prompt + thinking, batched),\n"
            "                         transplant (continue from the thinking state; needs equal\n"
            "                         Mamba widths) or reread (transplant at the start of the\n"
            "                         thought's last line, which the answer budget then reads\n"
            "                         itself) (default exact)\n"
            "\nspeculative decoding (greedy: the same output as without it; sampling: the same\n"
            "distribution, by speculative sampling):\n"
            "      --draft D          drafter: a smaller budget of the same checkpoint (the nested\n"
            "                         self-drafter: no extra weights) or 'ngram' (prompt lookup)\n"
            "      --draft-n K        draft up to K tokens per step (default 4, 1..8); adapts to the\n"
            "                         acceptance rate and stops drafting while it does not pay\n"
            "  -v, --verbose          print the prompt's token count and the seed\n"
            "  -h, --help             this help\n");
}

enum { O_CHAT = 256, O_SYSTEM, O_NOTHINK, O_TEMP, O_TOPK, O_TOPP, O_MINP, O_RPEN, O_RLAST, O_IGNEOS,
       O_TBUDGET, O_TGRACE, O_TMSG, O_TWITH, O_AWITH, O_SWITCH, O_DRAFT, O_DRAFTN };

static int emit_stdout(void *ud, st_text_kind k, const char *text, size_t len) {
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static double rate(int n, double t) { return n / (t > 0 ? t : 1e-9); }

int cmd_run(int argc, char **argv) {
    const char *dir = NULL, *budget = NULL, *prompt = NULL, *file = NULL, *system = NULL;
    long n_predict = 256, threads = 0, ctx = 0, seed = -1, topk = 40, rlast = 64;
    double temp = 0.8, topp = 0.95, minp = 0.05, rpen = 1.0;
    int chat = 0, think = 1, ignore_eos = 0, verbose = 0;
    long tbudget = -1, tgrace = 16;
    const char *tmsg = NULL, *twith = NULL, *awith = NULL, *draft = NULL;
    long draft_n = 4;
    st_switch_mode mode = ST_SWITCH_EXACT;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"budget", required_argument, 0, 'b'}, {"budget-file", required_argument, 0, 'B'},
        {"prompt", required_argument, 0, 'p'}, {"file", required_argument, 0, 'f'},
        {"n-predict", required_argument, 0, 'n'}, {"chat", no_argument, 0, O_CHAT},
        {"system", required_argument, 0, O_SYSTEM}, {"no-think", no_argument, 0, O_NOTHINK},
        {"temp", required_argument, 0, O_TEMP}, {"top-k", required_argument, 0, O_TOPK},
        {"top-p", required_argument, 0, O_TOPP}, {"min-p", required_argument, 0, O_MINP},
        {"repeat-penalty", required_argument, 0, O_RPEN}, {"repeat-last-n", required_argument, 0, O_RLAST},
        {"seed", required_argument, 0, 's'}, {"threads", required_argument, 0, 't'},
        {"ctx", required_argument, 0, 'c'}, {"ignore-eos", no_argument, 0, O_IGNEOS},
        {"think-budget", required_argument, 0, O_TBUDGET}, {"think-grace", required_argument, 0, O_TGRACE},
        {"think-message", required_argument, 0, O_TMSG}, {"think-with", required_argument, 0, O_TWITH},
        {"answer-with", required_argument, 0, O_AWITH}, {"switch", required_argument, 0, O_SWITCH},
        {"draft", required_argument, 0, O_DRAFT}, {"draft-n", required_argument, 0, O_DRAFTN},
        {"verbose", no_argument, 0, 'v'}, {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
#define BAD(what) return cli_usage("run", "bad value for %s: '%s'", what, optarg)
    while ((ch = getopt_long(argc, argv, ":m:b:p:f:n:s:t:c:vh", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': dir = optarg; break;
        case 'b': budget = optarg; break;
        case 'B': budget = cli_budget_file(optarg); break;
        case 'p': prompt = optarg; break;
        case 'f': file = optarg; break;
        case 'n': if (cli_int(optarg, 0, 1 << 24, &n_predict)) BAD("-n"); break;
        case O_CHAT: chat = 1; break;
        case O_SYSTEM: system = optarg; break;
        case O_NOTHINK: think = 0; break;
        case O_TEMP: if (cli_float(optarg, 0, 100, &temp)) BAD("--temp"); break;
        case O_TOPK: if (cli_int(optarg, 0, 1 << 24, &topk)) BAD("--top-k"); break;
        case O_TOPP: if (cli_float(optarg, 0, 1, &topp)) BAD("--top-p"); break;
        case O_MINP: if (cli_float(optarg, 0, 1, &minp)) BAD("--min-p"); break;
        case O_RPEN: if (cli_float(optarg, 0.01, 100, &rpen)) BAD("--repeat-penalty"); break;
        case O_RLAST: if (cli_int(optarg, 0, 1 << 20, &rlast)) BAD("--repeat-last-n"); break;
        case 's': if (cli_int(optarg, 0, 0x7fffffffffffL, &seed)) BAD("--seed"); break;
        case 't': if (cli_int(optarg, 0, 1024, &threads)) BAD("--threads"); break;
        case 'c': if (cli_int(optarg, 1, 1 << 24, &ctx)) BAD("--ctx"); break;
        case O_IGNEOS: ignore_eos = 1; break;
        case O_TBUDGET: if (cli_int(optarg, 0, 1 << 24, &tbudget)) BAD("--think-budget"); break;
        case O_TGRACE: if (cli_int(optarg, 0, 1 << 24, &tgrace)) BAD("--think-grace"); break;
        case O_TMSG: tmsg = optarg; break;
        case O_TWITH: twith = optarg; break;
        case O_AWITH: awith = optarg; break;
        case O_SWITCH:
            if (st_switch_mode_parse(optarg) < 0) BAD("--switch");
            mode = (st_switch_mode)st_switch_mode_parse(optarg);
            break;
        case O_DRAFT: draft = optarg; break;
        case O_DRAFTN: if (cli_int(optarg, 1, 8, &draft_n)) BAD("--draft-n"); break;
        case 'v': verbose = 1; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage("run", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage("run", "unknown option %s", argv[optind - 1]);
        }
    }
#undef BAD
    if (optind < argc) return cli_usage("run", "unexpected argument '%s'", argv[optind]);
    if (!dir) return cli_usage("run", "-m DIR is required");
    if (!!prompt + !!file != 1) return cli_usage("run", "give exactly one of -p TEXT or -f FILE");
    if (threads) st_set_threads((int)threads);
    if (awith) budget = awith;
    if ((tbudget >= 0 || twith || tmsg) && !(chat && think))
        return cli_usage("run", "--think-budget, --think-message and --think-with need --chat with thinking on");

    char *text = NULL;
    if (file) { text = cli_read_text("run", file, NULL); if (!text) return 1; }
    else text = strdup(prompt);

    st_model *m = NULL;
    st_budget *b = NULL;
    st_tokenizer *tok = NULL;
    st_budget *bt = NULL, *bd = NULL;
    st_gen *g = NULL;
    int32_t *ids = NULL;
    char *rendered = NULL;
    int rc = 1, n_ids = 0;
    if (cli_load("run", dir, budget, &m, &b)) goto out;
    const st_config *c = st_model_config(m);
    char tp[4096];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", dir);
    st_status e = st_tokenizer_load(tp, &tok);
    if (e) { cli_fail_st("run", e); goto out; }
    const char *input = text;
    if (chat) {
        st_chat_msg msgs[2];
        int nm = 0;
        if (system) msgs[nm++] = (st_chat_msg){"system", system, NULL};
        msgs[nm++] = (st_chat_msg){"user", text, NULL};
        e = st_chat_render(msgs, nm, 1, think, &rendered);
        if (e) { cli_fail_st("run", e); goto out; }
        input = rendered;
    }
    e = st_tokenize(tok, input, strlen(input), 1, &ids, &n_ids);
    if (e) { cli_fail_st("run", e); goto out; }
    if (n_ids == 0) { cli_fail("run", "the prompt is empty"); goto out; }
    for (int i = 0; i < n_ids; i++)
        if (ids[i] >= c->vocab_size) {
            cli_fail("run", "tokenizer id %d is outside the model's vocabulary of %d", ids[i], c->vocab_size);
            goto out;
        }
    st_sampler_params sp = st_sampler_default_params();
    sp.temperature = (float)temp; sp.top_k = (int)topk; sp.top_p = (float)topp; sp.min_p = (float)minp;
    sp.repeat_penalty = (float)rpen; sp.repeat_last_n = (int)rlast;
    sp.seed = seed >= 0 ? (uint64_t)seed : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
    if (twith && (e = st_budget_resolve(m, twith, &bt))) { cli_fail_st("run", e); goto out; }
    if (draft && strcmp(draft, "ngram") && (e = st_budget_resolve(m, draft, &bd))) { cli_fail_st("run", e); goto out; }
    st_gen_params gp = st_gen_default_params();
    gp.max_tokens = (int)n_predict;
    gp.thinking = chat && think;
    gp.think_budget = (int)tbudget;
    gp.think_grace = (int)tgrace;
    gp.think_message = tmsg;
    gp.think_with = bt;
    gp.answer_with = b;
    gp.mode = mode;
    gp.ignore_eos = ignore_eos;
    gp.sampling = sp;
    gp.draft = bd;
    gp.draft_ngram = draft && !bd;
    gp.draft_n = (int)draft_n;
    if (verbose)
        fprintf(stderr, "budget %s, prompt %d tokens, seed %llu, %d threads, %s\n", st_budget_name(b), n_ids,
                (unsigned long long)sp.seed, st_get_threads(), st_cpu_features());
    e = st_gen_new(m, tok, &gp, ids, n_ids, (int)ctx, NULL, emit_stdout, NULL, &g);
    if (e) { cli_fail_st("run", e); goto out; }
    e = st_gen_run(g);
    printf("\n");
    if (e) { cli_fail_st("run", e); goto out; }
    const st_gen_stats *gs = st_gen_get_stats(g);
    if (!gp.thinking || (!bt && tbudget < 0)) {
        fprintf(stderr, "[budget %s] prefill %d tok in %.3f s (%.1f tok/s), decode %d tok in %.3f s (%.1f tok/s)\n",
                st_budget_name(b), n_ids, gs->t_prefill, rate(n_ids, gs->t_prefill), gs->completion_tokens,
                gs->t_think + gs->t_answer, rate(gs->completion_tokens, gs->t_think + gs->t_answer));
    } else {
        const char *tn = st_budget_name(bt ? bt : b);
        fprintf(stderr, "[think %s] prefill %d tok in %.3f s (%.1f tok/s), think %d tok (%d sampled%s) in %.3f s (%.1f tok/s)\n",
                tn, n_ids, gs->t_prefill, rate(n_ids, gs->t_prefill), gs->think_tokens, gs->think_sampled,
                gs->forced_close ? ", closed by the budget" : "", gs->t_think, rate(gs->think_tokens, gs->t_think));
        if (gs->switched)
            fprintf(stderr, "[switch %s] %s -> %s: %d tok prefilled in %.3f s (%.1f tok/s)\n",
                    st_switch_mode_name(mode), tn, st_budget_name(b), gs->switch_tokens,
                    gs->t_switch, rate(gs->switch_tokens, gs->t_switch));
        fprintf(stderr, "[answer %s] %d tok in %.3f s (%.1f tok/s); total %d tok, %.3f s, finish %s\n",
                st_budget_name(b), gs->answer_tokens, gs->t_answer, rate(gs->answer_tokens, gs->t_answer),
                gs->completion_tokens, gs->t_prefill + gs->t_think + gs->t_switch + gs->t_answer,
                st_finish_name(gs->finish));
    }
    if (draft)
        fprintf(stderr, "[draft %s] %d of %d drafted tokens accepted (%.0f%%) in %d verify steps; "
                "per drafted token: drafting %.2f, verifying %.2f plain steps\n", draft,
                gs->draft_accepted, gs->draft_proposed,
                gs->draft_proposed ? 100.0 * gs->draft_accepted / gs->draft_proposed : 0.0, gs->draft_steps,
                gs->draft_cost, gs->verify_cost);
    rc = 0;
out:
    free(text); free(rendered); free(ids);
    st_gen_free(g);
    st_budget_free(bt);
    st_budget_free(bd);
    st_tokenizer_free(tok);
    st_budget_free(b);
    st_model_free(m);
    return rc;
}
