/* bd_draw: clipped rectangles and bitmap text. */
#include "bd_draw.h"

#include <string.h>

#define PAD 1 /* pixels (times scale) around label text and between glyphs */

static int clampi(int v, int lo, int hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

void bd_draw_fill(bd_image *im, int x0, int y0, int x1, int y1, bd_rgb c) {
  if (!im || !im->data) return;
  x0 = clampi(x0, 0, im->w);
  x1 = clampi(x1, 0, im->w);
  y0 = clampi(y0, 0, im->h);
  y1 = clampi(y1, 0, im->h);
  for (int y = y0; y < y1; y++) {
    uint8_t *p = im->data + ((size_t)y * im->w + x0) * 3;
    for (int x = x0; x < x1; x++, p += 3) {
      p[0] = c.r;
      p[1] = c.g;
      p[2] = c.b;
    }
  }
}

void bd_draw_rect(bd_image *im, int x0, int y0, int x1, int y1, int thick, bd_rgb c) {
  if (x1 <= x0 || y1 <= y0 || thick < 1) return;
  if (thick > (x1 - x0 + 1) / 2) thick = (x1 - x0 + 1) / 2;
  if (thick > (y1 - y0 + 1) / 2) thick = (y1 - y0 + 1) / 2;
  bd_draw_fill(im, x0, y0, x1, y0 + thick, c); /* top */
  bd_draw_fill(im, x0, y1 - thick, x1, y1, c); /* bottom */
  bd_draw_fill(im, x0, y0, x0 + thick, y1, c); /* left */
  bd_draw_fill(im, x1 - thick, y0, x1, y1, c); /* right */
}

bd_rgb bd_draw_palette(int i) {
  static const bd_rgb pal[] = {{230, 25, 75},  {60, 180, 75},   {255, 225, 25}, {0, 130, 200},
                               {245, 130, 48}, {145, 30, 180},  {70, 240, 240}, {240, 50, 230},
                               {210, 245, 60}, {250, 190, 212}, {0, 128, 128},  {220, 190, 255},
                               {170, 110, 40}, {255, 250, 200}, {128, 0, 0},    {170, 255, 195}};
  const int n = (int)(sizeof pal / sizeof pal[0]);
  return pal[((i % n) + n) % n];
}

int bd_draw_text_width(const char *text, int s) {
  if (!text || s < 1) return 0;
  size_t n = strlen(text);
  if (n == 0) return 0;
  return (int)n * (BD_FONT_W + PAD) * s - PAD * s;
}

int bd_draw_text_height(int s) {
  return s < 1 ? 0 : BD_FONT_H * s;
}

void bd_draw_text(bd_image *im, int x, int y, const char *text, int s, bd_rgb fg) {
  if (!im || !im->data || !text || s < 1) return;
  for (const char *t = text; *t; t++, x += (BD_FONT_W + PAD) * s) {
    if (x >= im->w) break;
    const char *const *g = bd_font_glyph((unsigned char)*t);
    if (!g) g = bd_font_glyph('?');
    for (int r = 0; r < BD_FONT_H; r++)
      for (int col = 0; col < BD_FONT_W; col++)
        if (g[r][col] == '#')
          bd_draw_fill(im, x + col * s, y + r * s, x + (col + 1) * s, y + (r + 1) * s, fg);
  }
}

void bd_draw_label(bd_image *im, int x, int y, const char *text, int s, bd_rgb fg, bd_rgb bg) {
  if (!im || !text || s < 1) return;
  int bw = bd_draw_text_width(text, s) + 2 * PAD * s, bh = bd_draw_text_height(s) + 2 * PAD * s;
  int by = y - bh >= 0 ? y - bh : y;  /* above the box when it fits, else inside */
  if (x + bw > im->w) x = im->w - bw; /* keep it readable at the right edge */
  if (x < 0) x = 0;
  bd_draw_fill(im, x, by, x + bw, by + bh, bg);
  bd_draw_text(im, x + PAD * s, by + PAD * s, text, s, fg);
}
