/*
 * elastify.c — `starling elastify --config FILE`: elastic training of a
 * ranked parent into one nested checkpoint (src/elastic/elastify.c,
 * docs/elastic.md §2). Config keys: docs/elastic.md.
 */
#include "cli.h"
#include "elastic/elastify.h"
#include "util/util.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f, "usage: starling elastify --config FILE [--force] [--threads N] [-q]\n\n"
               "Elastic training (the Star Elastic method): a router per axis (2-layer MLP on the\n"
               "one-hot budget) picks nested widths through Gumbel-Softmax; the masked student\n"
               "learns by forward-KL distillation from the frozen parent, and a budget loss pulls\n"
               "each budget's expected parameter count to its target. Two-stage curriculum.\n"
               "The config's \"init\" is a ranked parent (starling rank). Writes OUT (config \"out\"):\n"
               "the checkpoint with the `elastic` block (the widths the routers chose per budget),\n"
               "routers.safetensors, elastify.csv and elastify.svg.\n\n"
               "  -c, --config FILE   elastify config (JSON; docs/elastic.md)\n"
               "  -f, --force         replace an existing output directory\n"
               "  -t, --threads N     threads (default: all cores)\n"
               "  -q, --quiet         no progress bar\n");
}

typedef struct { st_progress p; const st_el_cfg *c; int quiet; } prog;

static void on_step(const st_el_event *e, void *user) {
    prog *P = user;
    if (P->quiet) return;
    st_progress_update(&P->p, (double)e->step);
    if (e->val[0] >= 0) {
        fprintf(stderr, "\rstep %ld/%ld (stage %d) kd %.4f budget %.4f tau %.3f |", e->step, e->steps, e->stage, e->kd,
                e->budget_loss, e->tau);
        for (int j = 0; j < P->c->nb; j++) fprintf(stderr, " val %s %.4f", P->c->b[j].name, e->val[j]);
        fprintf(stderr, "\n");
    }
}

int cmd_elastify(int argc, char **argv) {
    static const struct option lo[] = {{"config", 1, 0, 'c'}, {"force", 0, 0, 'f'}, {"threads", 1, 0, 't'},
                                       {"quiet", 0, 0, 'q'},  {"help", 0, 0, 'h'},  {0, 0, 0, 0}};
    const char *cfgp = NULL;
    int force = 0, quiet = 0, opt;
    long threads = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:ft:qh", lo, NULL)) != -1) {
        switch (opt) {
        case 'c': cfgp = optarg; break;
        case 'f': force = 1; break;
        case 't': if (cli_int(optarg, 1, 4096, &threads)) return cli_usage("elastify", "--threads: bad value '%s'", optarg); break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: return cli_usage("elastify", "unknown option");
        }
    }
    if (optind < argc) return cli_usage("elastify", "unexpected argument '%s'", argv[optind]);
    if (!cfgp) return cli_usage("elastify", "--config FILE is required");
    st_el_cfg c;
    st_status rc = st_el_cfg_load(&c, cfgp);
    if (rc) return cli_fail_st("elastify", rc);
    if (threads) c.t.threads = (int)threads;
    prog P = {.c = &c, .quiet = quiet};
    if (!quiet) st_progress_begin(&P.p, "elastify", (double)c.t.opt.steps, "steps");
    rc = st_elastify_run(&c, force, on_step, &P);
    if (!quiet) st_progress_end(&P.p);
    if (rc) { st_el_cfg_free(&c); return cli_fail_st("elastify", rc); }
    printf("wrote %s\n", c.t.out_dir);
    st_el_cfg_free(&c);
    return 0;
}
