/*
 * plot.c — see plot.h. Series are kept as given and laid out at write time,
 * when the ranges are known.
 */
#include "util/plot.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { S_LINE, S_DOTS, S_POINT } kind;

typedef struct {
    double *x, *y;
    int n, dashed;
    kind k;
    char color[16], *label;
} series;

struct st_plot {
    st_plot_axes a;
    char *title, *xlabel, *ylabel;
    series *s;
    int n, cap;
};

st_plot *st_plot_new(const st_plot_axes *a) {
    st_plot *p = st_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->a = *a;
    p->title = st_strdup(a->title ? a->title : "");
    p->xlabel = st_strdup(a->xlabel ? a->xlabel : "");
    p->ylabel = st_strdup(a->ylabel ? a->ylabel : "");
    if (!p->title || !p->xlabel || !p->ylabel) { st_plot_free(p); return NULL; }
    return p;
}

void st_plot_free(st_plot *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) { free(p->s[i].x); free(p->s[i].y); free(p->s[i].label); }
    free(p->s); free(p->title); free(p->xlabel); free(p->ylabel);
    free(p);
}

static void add(st_plot *p, const double *x, const double *y, int n, const char *color, const char *label,
                int dashed, kind k) {
    if (!p || n <= 0) return;
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 8;
        series *s = st_realloc(p->s, sizeof *s * (size_t)cap);
        if (!s) return;
        p->s = s;
        p->cap = cap;
    }
    series *s = &p->s[p->n];
    memset(s, 0, sizeof *s);
    s->x = st_malloc(sizeof(double) * (size_t)n);
    s->y = st_malloc(sizeof(double) * (size_t)n);
    s->label = label ? st_strdup(label) : NULL;
    if (!s->x || !s->y || (label && !s->label)) { free(s->x); free(s->y); free(s->label); return; }
    memcpy(s->x, x, sizeof(double) * (size_t)n);
    memcpy(s->y, y, sizeof(double) * (size_t)n);
    snprintf(s->color, sizeof s->color, "%s", color ? color : "#333");
    s->n = n;
    s->dashed = dashed;
    s->k = k;
    p->n++;
}

void st_plot_line(st_plot *p, const double *x, const double *y, int n, const char *color, const char *label,
                  int dashed) {
    add(p, x, y, n, color, label, dashed, S_LINE);
}

void st_plot_dots(st_plot *p, const double *x, const double *y, int n, const char *color, const char *label) {
    add(p, x, y, n, color, label, 0, S_DOTS);
}

void st_plot_point(st_plot *p, double x, double y, const char *color, const char *label) {
    add(p, &x, &y, 1, color, label, 0, S_POINT);
}

static void esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

typedef struct { double lo, hi; int log; int px0, px1; } axis;

static double tr(const axis *a, double v) {
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
    return a->px0 + t * (a->px1 - a->px0);
}

/* Ticks: powers of ten on log axes, 1/2/5 steps on linear ones. */
static int ticks(const axis *a, double *t, int cap) {
    int n = 0;
    if (a->log) {
        for (double v = pow(10, floor(log10(a->lo))); v <= a->hi * 1.0001 && n < cap; v *= 10)
            if (v >= a->lo * 0.9999) t[n++] = v;
        return n;
    }
    double span = a->hi - a->lo, step = pow(10, floor(log10(span / 5)));
    if (span / step > 10) step *= 2;
    if (span / step > 10) step *= 2.5;
    for (double v = ceil(a->lo / step) * step; v <= a->hi + step * 1e-9 && n < cap; v += step) t[n++] = v;
    return n;
}

static void range(const st_plot *p, int isx, double *lo, double *hi) {
    double mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < p->n; i++)
        for (int k = 0; k < p->s[i].n; k++) {
            double v = isx ? p->s[i].x[k] : p->s[i].y[k];
            if (!isfinite(v)) continue;
            if (v < mn) mn = v;
            if (v > mx) mx = v;
        }
    if (!(mn <= mx)) { mn = 0; mx = 1; }
    const int lg = isx ? p->a.logx : p->a.logy;
    if (lg) { mn /= 1.5; mx *= 1.5; if (mn <= 0) mn = mx / 1000; }
    else { if (mn > 0) mn = 0; mx += (mx - mn) * 0.08; if (mx <= mn) mx = mn + 1; }
    *lo = mn; *hi = mx;
}

st_status st_plot_write(const st_plot *p, const char *path) {
    const int W = 760, H = 480, L = 70, R = 190, T = 40, B = 55;
    axis ax = {p->a.xmin, p->a.xmax, p->a.logx, L, W - R}, ay = {p->a.ymin, p->a.ymax, p->a.logy, H - B, T};
    if (ax.lo == 0 && ax.hi == 0) range(p, 1, &ax.lo, &ax.hi);
    if (ay.lo == 0 && ay.hi == 0) range(p, 0, &ay.lo, &ay.hi);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return st_err(ST_ERR_NOMEM, "plot: out of memory");
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
               "font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%d\" y=\"22\" font-size=\"14\">", L);
    esc(f, p->title);
    fprintf(f, "</text>\n");
    double tk[32];
    int nt = ticks(&ax, tk, 32);
    for (int i = 0; i < nt; i++) {
        double x = tr(&ax, tk[i]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e5e5e5\"/>"
                   "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n", x, T, x, H - B, x, H - B + 16, tk[i]);
    }
    nt = ticks(&ay, tk, 32);
    for (int i = 0; i < nt; i++) {
        double y = tr(&ay, tk[i]);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L, y, W - R, y, L - 6, y + 4, tk[i]);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#333\"/>\n", L, T,
            W - R - L, H - B - T);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", (L + W - R) / 2, H - 14);
    esc(f, p->xlabel);
    fprintf(f, "</text>\n<text transform=\"translate(18,%d) rotate(-90)\" text-anchor=\"middle\">", (T + H - B) / 2);
    esc(f, p->ylabel);
    fprintf(f, "</text>\n<svg x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" viewBox=\"%d %d %d %d\" overflow=\"hidden\">\n",
            L, T, W - R - L, H - B - T, L, T, W - R - L, H - B - T);
    for (int i = 0; i < p->n; i++) {
        const series *s = &p->s[i];
        if (s->k == S_DOTS) {
            for (int k = 0; k < s->n; k++)
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", tr(&ax, s->x[k]),
                        tr(&ay, s->y[k]), s->color);
            continue;
        }
        if (s->k == S_POINT) {
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>", tr(&ax, s->x[0]), tr(&ay, s->y[0]),
                    s->color);
            if (s->label) {
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\">", tr(&ax, s->x[0]) + 6, tr(&ay, s->y[0]) - 5);
                esc(f, s->label);
                fprintf(f, "</text>");
            }
            fprintf(f, "\n");
            continue;
        }
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", s->color,
                s->dashed ? " stroke-dasharray=\"6,4\"" : "");
        for (int k = 0; k < s->n; k++) fprintf(f, "%.1f,%.1f ", tr(&ax, s->x[k]), tr(&ay, s->y[k]));
        fprintf(f, "\"/>\n");
    }
    fprintf(f, "</svg>\n");
    int ly = T + 8;
    for (int i = 0; i < p->n; i++) {
        const series *s = &p->s[i];
        if (s->k == S_POINT || !s->label) continue;
        if (s->k == S_DOTS)
            fprintf(f, "<circle cx=\"%d\" cy=\"%d\" r=\"3\" fill=\"%s\"/>", W - R + 22, ly, s->color);
        else
            fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"%s/>", W - R + 10,
                    ly, W - R + 34, ly, s->color, s->dashed ? " stroke-dasharray=\"6,4\"" : "");
        fprintf(f, "<text x=\"%d\" y=\"%d\">", W - R + 40, ly + 4);
        esc(f, s->label);
        fprintf(f, "</text>\n");
        ly += 18;
    }
    fprintf(f, "</svg>\n");
    if (fclose(f) || !buf) { free(buf); return st_err(ST_ERR_NOMEM, "plot: out of memory"); }
    st_status rc = st_write_file_atomic(path, buf, len);
    free(buf);
    return rc;
}
