/* synth.c — `starling synth`: write a deterministic random Nemotron-H checkpoint. */
#include "cli.h"
#include "model/synth.h"

#include <getopt.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f) {
    fprintf(f, "usage: starling synth -o DIR [--preset default|bench|nano8|big] [--dtype bf16|f16|f32] [--seed N] [--force]\n\n"
               "Write a random but deterministic Nemotron-H checkpoint (config.json with an elastic\n"
               "block of budgets L/M/S, model.safetensors, byte-level tokenizer.json). 'default' is a\n"
               "tiny model with every layer type; 'bench' holds about 1 GB of BF16 weights, 'big' about 3 GB.\n");
}

int cmd_synth(int argc, char **argv) {
    const char *out = NULL, *preset = "default", *dt = "bf16";
    long seed = -1;
    int force = 0;
    static const struct option opts[] = {{"output", required_argument, 0, 'o'}, {"preset", required_argument, 0, 'P'},
                                         {"dtype", required_argument, 0, 'd'}, {"seed", required_argument, 0, 's'},
                                         {"force", no_argument, 0, 'f'}, {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":o:P:d:s:fh", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': out = optarg; break;
        case 'P': preset = optarg; break;
        case 'd': dt = optarg; break;
        case 's': if (cli_int(optarg, 0, 0x7fffffffL, &seed)) return cli_usage("synth", "bad --seed '%s'", optarg); break;
        case 'f': force = 1; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage("synth", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage("synth", "unknown option %s", argv[optind - 1]);
        }
    }
    if (!out) return cli_usage("synth", "-o DIR is required");
    st_synth_opts o;
    if (st_synth_preset(preset, &o)) return cli_usage("synth", "unknown preset '%s' (default, bench, nano8, big)", preset);
    if (!strcmp(dt, "bf16")) o.dtype = ST_DT_BF16;
    else if (!strcmp(dt, "f16")) o.dtype = ST_DT_F16;
    else if (!strcmp(dt, "f32")) o.dtype = ST_DT_F32;
    else return cli_usage("synth", "unknown --dtype '%s' (bf16, f16, f32)", dt);
    if (seed >= 0) o.seed = (uint64_t)seed;
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", out);
    struct stat sb;
    if (!force && stat(p, &sb) == 0) return cli_fail("synth", "%s already holds a checkpoint (use --force)", out);
    st_status rc = st_synth_write(out, &o);
    if (rc) return cli_fail_st("synth", rc);
    fprintf(stderr, "wrote %s (preset %s)\n", out, preset);
    return 0;
}
