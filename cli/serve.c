/*
 * serve.c — `starling serve`: the OpenAI-compatible HTTP server over one
 * loaded checkpoint (src/server/server.h). Binds 127.0.0.1 unless told
 * otherwise; prints "listening on http://HOST:PORT" on stderr (and writes the
 * port to --port-file, for scripts that ask for port 0); stops cleanly on
 * SIGINT / SIGTERM: new requests get 503, running ones end, threads join.
 */
#include "cli.h"
#include "server/server.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: starling serve -m DIR [options]\n\n"
            "  -m, --model DIR        Hugging Face checkpoint directory (with tokenizer.json)\n"
            "      --host ADDR        IPv4 address to bind (default 127.0.0.1)\n"
            "      --port N           TCP port (default 8080; 0 = any free port)\n"
            "      --port-file F      write the bound port to F once listening\n"
            "      --api-key KEY      require 'Authorization: Bearer KEY' on /v1/ (default: none;\n"
            "                         also read from $STARLING_API_KEY)\n"
            "      --parallel N       sequences generated at once, their decode steps fused into one\n"
            "                         batched forward pass per budget (default 8)\n"
            "      --queue N          requests waiting for a slot before 429 (default 32)\n"
            "      --max-body BYTES   largest request body (default 1048576; larger: 413)\n"
            "      --max-prompt N     longest prompt in tokens (default: the context)\n"
            "  -c, --ctx N            context per sequence (default: the model's maximum)\n"
            "      --max-tokens N     default max_tokens of a chat request (default 1024)\n"
            "      --timeout S        seconds a request may take, queueing included (default 300)\n"
            "      --cache-mb N       prompt cache memory in MiB (default 256, 0 = off)\n"
            "      --cache-every N    prompt cache snapshot interval in tokens (default 256)\n"
            "      --prefill-chunk N  prompt tokens prefilled per scheduler pass (default 256): a long\n"
            "                         prompt is read in chunks while the running streams keep decoding\n"
            "      --draft D          speculative decoding for greedy requests by default: a smaller\n"
            "                         budget (the nested self-drafter) or 'ngram'; a request's\n"
            "                         \"speculative\": {\"draft\": D, \"n\": K} overrides it, null turns it off\n"
            "      --draft-n K        tokens drafted per step at most (default 4, 1..8)\n"
            "  -t, --threads N        kernel threads (default: all cores)\n"
            "  -q, --quiet            no log lines\n"
            "  -h, --help             this help\n\n"
            "endpoints: GET /health, GET /metrics (Prometheus), GET /v1/models, POST /v1/chat/completions,\n"
            "POST /v1/completions (stream: true for server-sent events).\n"
            "model ids: 'starling' (the default budget), 'starling:NAME' per budget, 'starling:full'.\n"
            "elastic request fields: thinking_budget, think_grace, think_message, think_with,\n"
            "answer_with (budget names), switch_mode (exact|transplant|reread), enable_thinking,\n"
            "speculative ({\"draft\": budget or \"ngram\", \"n\": 1..8}: greedy output is unchanged, sampled\n"
            "output keeps its distribution).\n\n"
            "prompt cache: a Mamba state cannot be cut back to an earlier token, so the server keeps whole-state\n"
            "snapshots at the points a later request is likely to share: each prompt's end, the end of every\n"
            "chat message in it (\"<|im_end|>\\n\": the next turn of a conversation repeats them all, earlier\n"
            "answers without their reasoning), the end of an answer given with thinking off (as the next turn\n"
            "renders it), and every --cache-every tokens. A request restores the longest snapshot of its prefix\n"
            "computed at its own budget (snapshots are kept per budget) and reports it as\n"
            "usage.prompt_tokens_details.cached_tokens. Snapshots share --cache-mb; the least recently used\n"
            "goes first when a new one needs room, and one larger than the whole cache is not kept. /metrics:\n"
            "starling_prompt_cache_{hits,hit_tokens,lookups,stores,evictions}_total, _entries, _bytes, _max_bytes.\n");
}

static void log_line(const char *s) { fprintf(stderr, "starling serve: %s\n", s); }

enum { O_HOST = 256, O_PORT, O_PORTFILE, O_KEY, O_PAR, O_QUEUE, O_BODY, O_MAXP, O_MAXT, O_TIMEOUT, O_CMB, O_CEVERY, O_CHUNK, O_DRAFT, O_DRAFTN };

int cmd_serve(int argc, char **argv) {
    const char *dir = NULL, *port_file = NULL;
    st_server_opts o = st_server_default_params();
    long port = 8080, v, threads = 0;
    double d;
    int quiet = 0;
    o.api_key = getenv("STARLING_API_KEY");
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"host", required_argument, 0, O_HOST},
        {"port", required_argument, 0, O_PORT}, {"port-file", required_argument, 0, O_PORTFILE},
        {"api-key", required_argument, 0, O_KEY}, {"parallel", required_argument, 0, O_PAR},
        {"queue", required_argument, 0, O_QUEUE}, {"max-body", required_argument, 0, O_BODY},
        {"max-prompt", required_argument, 0, O_MAXP}, {"ctx", required_argument, 0, 'c'},
        {"max-tokens", required_argument, 0, O_MAXT}, {"timeout", required_argument, 0, O_TIMEOUT},
        {"cache-mb", required_argument, 0, O_CMB}, {"cache-every", required_argument, 0, O_CEVERY},
        {"prefill-chunk", required_argument, 0, O_CHUNK}, {"draft", required_argument, 0, O_DRAFT},
        {"draft-n", required_argument, 0, O_DRAFTN},
        {"threads", required_argument, 0, 't'}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
#define BAD(what) return cli_usage("serve", "bad value for %s: '%s'", what, optarg)
    while ((ch = getopt_long(argc, argv, ":m:c:t:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': dir = optarg; break;
        case O_HOST: o.host = optarg; break;
        case O_PORT: if (cli_int(optarg, 0, 65535, &port)) BAD("--port"); break;
        case O_PORTFILE: port_file = optarg; break;
        case O_KEY: o.api_key = optarg; break;
        case O_PAR: if (cli_int(optarg, 1, 1024, &v)) BAD("--parallel"); o.parallel = (int)v; break;
        case O_QUEUE: if (cli_int(optarg, 1, 1 << 20, &v)) BAD("--queue"); o.queue = (int)v; break;
        case O_BODY: if (cli_int(optarg, 64, 1L << 34, &v)) BAD("--max-body"); o.max_body = (size_t)v; break;
        case O_MAXP: if (cli_int(optarg, 1, 1 << 24, &v)) BAD("--max-prompt"); o.max_prompt = (int)v; break;
        case 'c': if (cli_int(optarg, 1, 1 << 24, &v)) BAD("--ctx"); o.ctx = (int)v; break;
        case O_MAXT: if (cli_int(optarg, 1, 1 << 24, &v)) BAD("--max-tokens"); o.max_tokens = (int)v; break;
        case O_TIMEOUT: if (cli_float(optarg, 0.001, 1e7, &d)) BAD("--timeout"); o.timeout_s = d; break;
        case O_CMB: if (cli_int(optarg, 0, 1 << 24, &v)) BAD("--cache-mb"); o.cache_bytes = (size_t)v << 20; break;
        case O_CEVERY: if (cli_int(optarg, 0, 1 << 24, &v)) BAD("--cache-every"); o.cache_interval = (int)v; break;
        case O_CHUNK: if (cli_int(optarg, 1, 1 << 24, &v)) BAD("--prefill-chunk"); o.prefill_chunk = (int)v; break;
        case O_DRAFT: o.draft = optarg; break;
        case O_DRAFTN: if (cli_int(optarg, 1, 8, &v)) BAD("--draft-n"); o.draft_n = (int)v; break;
        case 't': if (cli_int(optarg, 0, 1024, &threads)) BAD("--threads"); break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage("serve", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage("serve", "unknown option %s", argv[optind - 1]);
        }
    }
#undef BAD
    if (optind < argc) return cli_usage("serve", "unexpected argument '%s'", argv[optind]);
    if (!dir) return cli_usage("serve", "-m DIR is required");
    o.port = (int)port;
    o.log = quiet ? NULL : log_line;
    if (threads) st_set_threads((int)threads);

    /* every thread started from here on inherits the blocked signals; this
     * thread collects them with sigwait */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    sigdelset(&sigs, SIGPIPE);

    st_model *m = NULL;
    st_tokenizer *tok = NULL;
    st_server *srv = NULL;
    int rc = 1;
    if (cli_load("serve", dir, NULL, &m, NULL)) return 1;
    char tp[4096];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", dir);
    st_status e = st_tokenizer_load(tp, &tok);
    if (e) { cli_fail_st("serve", e); goto out; }
    e = st_server_start(m, tok, &o, &srv);
    if (e) { cli_fail_st("serve", e); goto out; }
    if (port_file) {
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", st_server_port(srv)) < 0 || fclose(f) || rename(tmp, port_file)) {
            cli_fail("serve", "cannot write %s", port_file);
            goto out;
        }
    }
    if (!quiet)
        fprintf(stderr, "starling serve: listening on http://%s:%d (%d threads, %d parallel, queue %d%s)\n", o.host,
                st_server_port(srv), st_get_threads(), o.parallel, o.queue, o.api_key && *o.api_key ? ", API key required" : "");
    int sig = 0;
    sigwait(&sigs, &sig);
    if (!quiet) fprintf(stderr, "starling serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rc = 0;
out:
    st_server_stop(srv);
    st_tokenizer_free(tok);
    st_model_free(m);
    return rc;
}
