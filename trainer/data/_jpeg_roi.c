/* Region-of-interest JPEG decoding with libjpeg(-turbo): decode only the rows and columns a crop
 * needs, optionally DCT-scaled by 1/2, 1/4 or 1/8. Used by trainer/data/images.py, which falls back
 * to OpenCV when this module is not built (it is an optional extension).
 *
 * decode(data, reduction, x0, y0, x1, y1) -> (pixels: bytearray, x, y, w, h, channels) | None
 *   Any baseline or progressive JPEG. Rows above the region are skipped with jpeg_skip_scanlines
 *   (entropy-decoded only, no IDCT or colour conversion), columns outside it with
 *   jpeg_crop_scanline, and decoding stops after the region's last row.
 *   data: the JPEG file's bytes; reduction: 1, 2, 4 or 8; [x0, x1) x [y0, y1): the wanted region in
 *   reduced pixels (clipped to the image). Returns the decoded region (x, y, w, h in reduced
 *   pixels: x may be rounded down and w up to the iMCU grid) as RGB (3 channels) or grey
 *   (1 channel), rows of w * channels bytes; None for colour spaces it does not convert (CMYK,
 *   YCCK). Raises ValueError with libjpeg's message on a fatal decoding error.
 *
 * add_restarts(data) -> bytes | None
 *   Lossless transcode (the DCT coefficients are copied, never re-quantised): the same image as
 *   a sequential Huffman JPEG with a restart marker after every MCU (and optimised Huffman
 *   tables). None for colour spaces decode() does not convert. Raises ValueError as decode().
 *
 * splice(data, x0, y0, x1, y1) -> (jpeg: bytes, x, y) | None
 *   For a sequential Huffman JPEG with restart markers aligned to its MCU rows (add_restarts'
 *   output, or an encoder's "restart every N rows"): a new, smaller JPEG of the MCU-aligned region
 *   covering full-image pixels [x0, x1) x [y0, y1), built by copying the restart segments under
 *   the region byte for byte (a restart segment starts with reset DC predictors at a byte
 *   boundary, so it decodes anywhere) and renumbering their markers. Nothing outside the region is
 *   entropy-decoded. (x, y): the region's origin in full-image pixels. None when the file has no
 *   usable restart markers (no DRI, an interval not aligned to MCU rows, progressive,
 *   arithmetic-coded, several scans, or markers missing).
 *
 * DCT and upsampling are libjpeg's defaults (islow, fancy), as OpenCV's decoder uses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

struct roi_error {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

static void on_error(j_common_ptr cinfo) {
  struct roi_error *err = (struct roi_error *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo) { (void)cinfo; }   /* warnings: silent, as OpenCV */

static int clip(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

static PyObject *decode(PyObject *self, PyObject *args) {
  Py_buffer src;
  int reduction, x0, y0, x1, y1;
  (void)self;
  if (!PyArg_ParseTuple(args, "y*iiiii", &src, &reduction, &x0, &y0, &x1, &y1)) return NULL;
  if (reduction != 1 && reduction != 2 && reduction != 4 && reduction != 8) {
    PyBuffer_Release(&src);
    return PyErr_Format(PyExc_ValueError, "reduction must be 1, 2, 4 or 8, got %d", reduction);
  }
  struct jpeg_decompress_struct dinfo;
  struct roi_error err;
  PyObject *volatile pixels = NULL;
  dinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.output_message = on_message;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&dinfo);
    PyBuffer_Release(&src);
    Py_XDECREF(pixels);
    return PyErr_Format(PyExc_ValueError, "%s", err.message);
  }
  jpeg_create_decompress(&dinfo);
  jpeg_mem_src(&dinfo, (const unsigned char *)src.buf, (unsigned long)src.len);
  jpeg_read_header(&dinfo, TRUE);
  if (dinfo.jpeg_color_space == JCS_GRAYSCALE) {
    dinfo.out_color_space = JCS_GRAYSCALE;
  } else if (dinfo.jpeg_color_space == JCS_YCbCr || dinfo.jpeg_color_space == JCS_RGB) {
    dinfo.out_color_space = JCS_EXT_RGB;
  } else {
    jpeg_destroy_decompress(&dinfo);
    PyBuffer_Release(&src);
    Py_RETURN_NONE;
  }
  dinfo.scale_num = 1;
  dinfo.scale_denom = (unsigned int)reduction;
  jpeg_start_decompress(&dinfo);
  int width = (int)dinfo.output_width, height = (int)dinfo.output_height;
  x0 = clip(x0, 0, width);
  x1 = clip(x1, x0, width);
  y0 = clip(y0, 0, height);
  y1 = clip(y1, y0, height);
  JDIMENSION crop_x = (JDIMENSION)x0, crop_w = (JDIMENSION)(x1 - x0);
  if (crop_w == 0 || y1 == y0) {   /* nothing of the image is needed */
    jpeg_destroy_decompress(&dinfo);
    PyBuffer_Release(&src);
    return Py_BuildValue("(y#iiiii)", "", (Py_ssize_t)0, x0, y0, 0, 0, dinfo.output_components);
  }
  if (crop_w < dinfo.output_width) jpeg_crop_scanline(&dinfo, &crop_x, &crop_w);
  Py_ssize_t stride = (Py_ssize_t)crop_w * dinfo.output_components;
  pixels = PyByteArray_FromStringAndSize(NULL, stride * (y1 - y0));
  if (pixels == NULL) {
    snprintf(err.message, sizeof err.message, "out of memory for a %d x %d region", (int)crop_w, y1 - y0);
    longjmp(err.jump, 1);
  }
  unsigned char *out = (unsigned char *)PyByteArray_AS_STRING(pixels);
  if (y0 > 0) jpeg_skip_scanlines(&dinfo, (JDIMENSION)y0);
  while ((int)dinfo.output_scanline < y1) {
    JSAMPROW row = out + stride * ((int)dinfo.output_scanline - y0);
    jpeg_read_scanlines(&dinfo, &row, 1);
  }
  int channels = dinfo.output_components;
  jpeg_abort_decompress(&dinfo);   /* the rows below the region are never decoded */
  jpeg_destroy_decompress(&dinfo);
  PyBuffer_Release(&src);
  PyObject *result = Py_BuildValue("(Oiiiii)", pixels, (int)crop_x, y0, (int)crop_w, y1 - y0, channels);
  Py_DECREF(pixels);
  return result;
}


/* ---- add_restarts ------------------------------------------------------------------------- */

static PyObject *add_restarts(PyObject *self, PyObject *args) {
  Py_buffer src;
  (void)self;
  if (!PyArg_ParseTuple(args, "y*", &src)) return NULL;
  struct jpeg_decompress_struct dinfo;
  struct jpeg_compress_struct cinfo;
  struct roi_error err;   /* one error manager for both objects */
  unsigned char *volatile outbuf = NULL;
  unsigned long outsize = 0;
  volatile int compress_created = 0;
  dinfo.err = cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.output_message = on_message;
  if (setjmp(err.jump)) {
    PyErr_Format(PyExc_ValueError, "%s", err.message);
    if (compress_created) jpeg_destroy_compress(&cinfo);
    jpeg_destroy_decompress(&dinfo);
    free(outbuf);
    PyBuffer_Release(&src);
    return NULL;
  }
  jpeg_create_decompress(&dinfo);
  jpeg_mem_src(&dinfo, (const unsigned char *)src.buf, (unsigned long)src.len);
  jpeg_read_header(&dinfo, TRUE);
  if (dinfo.jpeg_color_space != JCS_GRAYSCALE && dinfo.jpeg_color_space != JCS_YCbCr) {
    jpeg_destroy_decompress(&dinfo);
    PyBuffer_Release(&src);
    Py_RETURN_NONE;
  }
  jvirt_barray_ptr *coefs = jpeg_read_coefficients(&dinfo);
  jpeg_create_compress(&cinfo);
  compress_created = 1;
  jpeg_mem_dest(&cinfo, (unsigned char **)&outbuf, &outsize);
  jpeg_copy_critical_parameters(&dinfo, &cinfo);
  cinfo.restart_interval = 1;
  cinfo.optimize_coding = TRUE;
  jpeg_write_coefficients(&cinfo, coefs);
  jpeg_finish_compress(&cinfo);
  jpeg_finish_decompress(&dinfo);
  PyObject *result = PyBytes_FromStringAndSize((const char *)outbuf, (Py_ssize_t)outsize);
  jpeg_destroy_compress(&cinfo);
  jpeg_destroy_decompress(&dinfo);
  free(outbuf);
  PyBuffer_Release(&src);
  return result;
}

/* ---- splice ------------------------------------------------------------------------------- */

struct huff_pick {              /* one code of a Huffman table, len 0 when absent */
  int code, len, symbol;
};

struct layout {                 /* what splice needs of a JPEG's headers */
  Py_ssize_t sof_dims;          /* offset of the SOF's height (2 bytes) then width (2 bytes) */
  Py_ssize_t dri_value;         /* offset of the DRI's interval (2 bytes) */
  Py_ssize_t entropy;           /* first byte of the scan's entropy-coded data */
  int width, height, mcu_w, mcu_h, interval;
  int scan_components, blocks[4], dc_table[4], ac_table[4];   /* per scan component */
  struct huff_pick dc_short[4], ac_eob[4];   /* per table id: the shortest DC code, AC's EOB */
};

static int u16(const unsigned char *p) { return (p[0] << 8) | p[1]; }

/* Record, from a DHT segment's tables, the codes a filler MCU needs (canonical Huffman codes:
 * assigned in order of length, then of listing). 0 on a malformed segment. */
static int parse_dht(const unsigned char *seg, Py_ssize_t len, struct layout *out) {
  Py_ssize_t p = 0;
  while (p + 17 <= len) {
    int cls = seg[p] >> 4, id = seg[p] & 15, total = 0;
    if (cls > 1 || id > 3) return 0;
    for (int i = 1; i <= 16; i++) total += seg[p + i];
    if (p + 17 + total > len) return 0;
    const unsigned char *symbols = seg + p + 17;
    struct huff_pick *pick = cls == 0 ? &out->dc_short[id] : &out->ac_eob[id];
    pick->len = 0;
    int code = 0, k = 0;
    for (int length = 1; length <= 16; length++, code <<= 1)
      for (int i = 0; i < seg[p + length]; i++, k++, code++)
        if (pick->len == 0 && (cls == 0 || symbols[k] == 0x00) && (cls == 1 || symbols[k] <= 11)) {
          pick->code = code; pick->len = length; pick->symbol = symbols[k];
        }
    p += 17 + total;
  }
  return p == len;
}

/* Parse the markers up to the first scan; 0 when splice cannot use this file. */
static int parse_layout(const unsigned char *d, Py_ssize_t n, struct layout *out) {
  int components = 0, hmax = 1, vmax = 1, have_sof = 0, ids[4] = {0}, hv[4] = {0};
  out->dri_value = -1;
  out->interval = 0;
  if (n < 4 || d[0] != 0xFF || d[1] != 0xD8) return 0;
  Py_ssize_t p = 2;
  while (p + 4 <= n) {
    if (d[p] != 0xFF) return 0;
    int marker = d[p + 1];
    if (marker == 0xFF) { p += 1; continue; }              /* fill byte */
    Py_ssize_t len = u16(d + p + 2);
    if (len < 2 || p + 2 + len > n) return 0;
    const unsigned char *seg = d + p + 4;
    if (marker == 0xC0 || marker == 0xC1) {                 /* baseline / extended Huffman */
      if (len < 8) return 0;
      out->height = u16(seg + 1);
      out->width = u16(seg + 3);
      components = seg[5];
      if (components < 1 || components > 4 || len < 8 + 3 * components) return 0;
      for (int c = 0; c < components; c++) {
        int h = seg[6 + 3 * c + 1] >> 4, v = seg[6 + 3 * c + 1] & 15;
        hmax = h > hmax ? h : hmax;
        vmax = v > vmax ? v : vmax;
        ids[c] = seg[6 + 3 * c];
        hv[c] = h * v;
      }
      out->sof_dims = p + 5;
      have_sof = 1;
    } else if ((marker >= 0xC2 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 &&
                marker != 0xCC) || marker == 0xD9) {
      return 0;                                             /* progressive, lossless, arithmetic */
    } else if (marker == 0xC4) {
      if (!parse_dht(seg, len - 2, out)) return 0;
    } else if (marker == 0xDD) {
      if (len != 4) return 0;
      out->interval = u16(seg);
      out->dri_value = p + 4;
    } else if (marker == 0xDA) {
      if (!have_sof || out->height == 0 || out->width == 0 || seg[0] != components) return 0;
      out->entropy = p + 2 + len;
      out->scan_components = components;
      for (int c = 0; c < components; c++) {                /* scan order: the SOS's */
        int which = -1;
        for (int f = 0; f < components; f++) if (ids[f] == seg[1 + 2 * c]) which = f;
        if (which < 0 || len < 2 + 1 + 2 * components + 3) return 0;
        out->blocks[c] = components == 1 ? 1 : hv[which];
        out->dc_table[c] = seg[2 + 2 * c] >> 4;
        out->ac_table[c] = seg[2 + 2 * c] & 15;
        if (out->dc_table[c] > 3 || out->ac_table[c] > 3) return 0;
      }
      if (components == 1) { hmax = 1; vmax = 1; }         /* non-interleaved: one block per MCU */
      out->mcu_w = 8 * hmax;
      out->mcu_h = 8 * vmax;
      return out->interval > 0 && out->dri_value > 0;
    }
    p += 2 + len;
  }
  return 0;
}

/* A filler MCU: every block DC-only (the shortest DC code, an arbitrary difference) then EOB,
 * padded with 1 bits and byte-stuffed. Its pixels are never used: it stands for an MCU that the
 * crop does not reach, so that the spliced image stays a rectangle. Returns its size in bytes,
 * or 0 when a table lacks the codes (no EOB in an AC table). */
static int filler_mcu(const struct layout *L, unsigned char *out, int cap) {
  unsigned long long acc = 0;
  int bits = 0, n = 0;
#define PUT(value, count)                                                   \
  do {                                                                      \
    acc = (acc << (count)) | ((unsigned long long)(value) & ((1ull << (count)) - 1)); \
    bits += (count);                                                        \
    while (bits >= 8) {                                                     \
      unsigned char byte = (unsigned char)(acc >> (bits - 8));              \
      bits -= 8;                                                            \
      if (n + 2 > cap) return 0;                                            \
      out[n++] = byte;                                                      \
      if (byte == 0xFF) out[n++] = 0x00;                                    \
    }                                                                       \
  } while (0)
  for (int c = 0; c < L->scan_components; c++) {
    const struct huff_pick *dc = &L->dc_short[L->dc_table[c]], *eob = &L->ac_eob[L->ac_table[c]];
    if (dc->len == 0 || eob->len == 0) return 0;
    for (int b = 0; b < L->blocks[c]; b++) {
      PUT(dc->code, dc->len);
      if (dc->symbol > 0) PUT(1u << (dc->symbol - 1), dc->symbol);   /* +2^(s-1): category s */
      PUT(eob->code, eob->len);
    }
  }
  if (bits > 0) PUT(0xFF, 8 - bits);                        /* pad with 1 bits */
#undef PUT
  return n;
}

/* x-extent [lo, hi] of the convex polygon q (4 points, x y pairs, in order) within the strip
 * ya <= y <= yb; 0 when they do not meet. */
static int strip_span(const double q[8], double ya, double yb, double *lo, double *hi) {
  int any = 0;
  for (int i = 0; i < 4; i++) {
    double px = q[2 * i], py = q[2 * i + 1], qx = q[(2 * i + 2) % 8], qy = q[(2 * i + 3) % 8];
    double t0 = 0.0, t1 = 1.0;
    if (py == qy) {
      if (py < ya || py > yb) continue;
    } else {
      double ta = (ya - py) / (qy - py), tb = (yb - py) / (qy - py);
      t0 = ta < tb ? ta : tb; t1 = ta < tb ? tb : ta;
      t0 = t0 > 0.0 ? t0 : 0.0; t1 = t1 < 1.0 ? t1 : 1.0;
      if (t0 > t1) continue;
    }
    double xa = px + t0 * (qx - px), xb = px + t1 * (qx - px);
    double mn = xa < xb ? xa : xb, mx = xa < xb ? xb : xa;
    if (!any || mn < *lo) *lo = mn;
    if (!any || mx > *hi) *hi = mx;
    any = 1;
  }
  return any;
}

static PyObject *splice(PyObject *self, PyObject *args) {
  Py_buffer src;
  int x0, y0, x1, y1;
  PyObject *quad_obj = Py_None;
  double margin = 0.0, quad[8];
  (void)self;
  if (!PyArg_ParseTuple(args, "y*iiii|Od", &src, &x0, &y0, &x1, &y1, &quad_obj, &margin)) return NULL;
  int use_quad = quad_obj != Py_None;
  if (use_quad) {
    PyObject *seq = PySequence_Fast(quad_obj, "quad must be a sequence of 8 numbers");
    if (seq == NULL || PySequence_Fast_GET_SIZE(seq) != 8) {
      Py_XDECREF(seq);
      PyBuffer_Release(&src);
      if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "quad must hold 8 numbers");
      return NULL;
    }
    for (int i = 0; i < 8; i++) quad[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
    Py_DECREF(seq);
    if (PyErr_Occurred()) { PyBuffer_Release(&src); return NULL; }
  }
  const unsigned char *d = (const unsigned char *)src.buf;
  Py_ssize_t n = src.len;
  struct layout L = {0};
  PyObject *result = NULL;
  Py_ssize_t *starts = NULL, *ends = NULL;
  int *span_lo = NULL, *span_hi = NULL;
  unsigned char filler[256];
  int filler_size = 0;
  if (!parse_layout(d, n, &L)) goto unusable;
  int per_row = (L.width + L.mcu_w - 1) / L.mcu_w, rows = (L.height + L.mcu_h - 1) / L.mcu_h;
  int seg_w, seg_h, segs_per_row;                           /* a segment's extent in MCUs */
  if (per_row % L.interval == 0) {
    seg_w = L.interval; seg_h = 1;
  } else if (L.interval % per_row == 0) {
    seg_w = per_row; seg_h = L.interval / per_row;
  } else {
    goto unusable;
  }
  segs_per_row = per_row / seg_w;
  x0 = clip(x0, 0, L.width); x1 = clip(x1, x0, L.width);
  y0 = clip(y0, 0, L.height); y1 = clip(y1, y0, L.height);
  if (x1 == x0 || y1 == y0) goto unusable;                  /* decode() reports the empty region */
  int c0 = x0 / (L.mcu_w * seg_w), c1 = (x1 + L.mcu_w * seg_w - 1) / (L.mcu_w * seg_w);
  int r0 = y0 / (L.mcu_h * seg_h), r1 = (y1 + L.mcu_h * seg_h - 1) / (L.mcu_h * seg_h);
  int seg_rows = (rows + seg_h - 1) / seg_h;
  if (c1 > segs_per_row) c1 = segs_per_row;
  if (r1 > seg_rows) r1 = seg_rows;
  /* per segment row, the segment columns [span_lo, span_hi) the quad (widened by margin) meets;
   * the others become fillers. Only with one MCU per segment and the codes a filler needs. */
  span_lo = PyMem_Malloc(sizeof(int) * (r1 - r0));
  span_hi = PyMem_Malloc(sizeof(int) * (r1 - r0));
  if (span_lo == NULL || span_hi == NULL) { PyErr_NoMemory(); goto done; }
  if (use_quad && seg_w == 1 && seg_h == 1) filler_size = filler_mcu(&L, filler, sizeof filler);
  for (int r = r0; r < r1; r++) {
    span_lo[r - r0] = c0;
    span_hi[r - r0] = c1;
    if (filler_size == 0) continue;
    double lo = 0.0, hi = 0.0;
    if (!strip_span(quad, r * L.mcu_h - margin, (r + 1) * L.mcu_h + margin, &lo, &hi)) {
      span_hi[r - r0] = c0;                                 /* the row is all filler */
      continue;
    }
    double a = floor((lo - margin) / L.mcu_w), b = floor((hi + margin) / L.mcu_w) + 1.0;
    span_lo[r - r0] = a <= c0 ? c0 : (a >= c1 ? c1 : (int)a);   /* clamped before the cast */
    span_hi[r - r0] = b <= span_lo[r - r0] ? span_lo[r - r0] : (b >= c1 ? c1 : (int)b);
  }
  /* start offsets of the segments up to the last one needed (+1 for its end) */
  Py_ssize_t last = (Py_ssize_t)(r1 - 1) * segs_per_row + c1;   /* index after the last needed */
  starts = PyMem_Malloc(sizeof(Py_ssize_t) * (last + 1));
  ends = PyMem_Malloc(sizeof(Py_ssize_t) * (last + 1));
  if (starts == NULL || ends == NULL) { PyErr_NoMemory(); goto done; }
  Py_ssize_t found = 0, p = L.entropy;
  starts[0] = p;
  while (found < last) {
    const unsigned char *ff = memchr(d + p, 0xFF, (size_t)(n - p));
    if (ff == NULL || ff + 1 >= d + n) break;
    p = ff - d;
    int m = d[p + 1];
    if (m == 0x00 || m == 0xFF) { p += 1; continue; }        /* stuffed byte or fill */
    if (m >= 0xD0 && m <= 0xD7) {
      ends[found] = p;
      starts[++found] = p + 2;
      p += 2;
      continue;
    }
    ends[found++] = p;                                      /* EOI or another marker: scan ends */
    break;
  }
  if (found < last) goto unusable;
  Py_ssize_t size = L.entropy + 2;
  for (int r = r0; r < r1; r++)
    for (int c = c0; c < c1; c++) {
      Py_ssize_t s = (Py_ssize_t)r * segs_per_row + c;
      int real = c >= span_lo[r - r0] && c < span_hi[r - r0];
      size += (real ? ends[s] - starts[s] : filler_size) + 2;
    }
  result = PyBytes_FromStringAndSize(NULL, size);
  if (result == NULL) goto done;
  unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
  memcpy(out, d, (size_t)L.entropy);
  int ox = c0 * seg_w * L.mcu_w, oy = r0 * seg_h * L.mcu_h;
  int new_w = (c1 * seg_w * L.mcu_w < L.width ? c1 * seg_w * L.mcu_w : L.width) - ox;
  int new_h = (r1 * seg_h * L.mcu_h < L.height ? r1 * seg_h * L.mcu_h : L.height) - oy;
  out[L.sof_dims] = (unsigned char)(new_h >> 8); out[L.sof_dims + 1] = (unsigned char)new_h;
  out[L.sof_dims + 2] = (unsigned char)(new_w >> 8); out[L.sof_dims + 3] = (unsigned char)new_w;
  /* the interval stays: a row of the new image holds whole segments (or a segment whole rows) */
  Py_ssize_t q = L.entropy;
  int k = 0, total = (r1 - r0) * (c1 - c0);
  for (int r = r0; r < r1; r++)
    for (int c = c0; c < c1; c++, k++) {
      Py_ssize_t s = (Py_ssize_t)r * segs_per_row + c;
      if (c >= span_lo[r - r0] && c < span_hi[r - r0]) {
        memcpy(out + q, d + starts[s], (size_t)(ends[s] - starts[s]));
        q += ends[s] - starts[s];
      } else {
        memcpy(out + q, filler, (size_t)filler_size);
        q += filler_size;
      }
      out[q++] = 0xFF;
      out[q++] = (unsigned char)(k + 1 < total ? 0xD0 + (k & 7) : 0xD9);
    }
  PyObject *tuple = Py_BuildValue("(Nii)", result, ox, oy);
  result = tuple;
  goto done;
unusable:
  Py_INCREF(Py_None);
  result = Py_None;
done:
  PyMem_Free(starts);
  PyMem_Free(ends);
  PyMem_Free(span_lo);
  PyMem_Free(span_hi);
  PyBuffer_Release(&src);
  return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(data, reduction, x0, y0, x1, y1) -> (pixels, x, y, w, h, channels) or None"},
    {"add_restarts", add_restarts, METH_VARARGS,
     "add_restarts(data) -> bytes or None: lossless transcode, a restart marker per MCU"},
    {"splice", splice, METH_VARARGS,
     "splice(data, x0, y0, x1, y1[, quad, margin]) -> (jpeg, x, y) or None: the restart segments "
     "under a region (those the quad does not reach, widened by margin, as fillers)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg_roi",
                                    "Region-of-interest JPEG decoding (libjpeg-turbo).", -1, methods};

PyMODINIT_FUNC PyInit__jpeg_roi(void) { return PyModule_Create(&module); }
