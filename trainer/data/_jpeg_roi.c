/* Region-of-interest JPEG decoding with libjpeg(-turbo): decode only the rows and columns a crop
 * needs, optionally DCT-scaled by 1/2, 1/4 or 1/8. Rows above the region are skipped with
 * jpeg_skip_scanlines (entropy-decoded only, no IDCT or colour conversion), columns outside it with
 * jpeg_crop_scanline, and decoding stops after the region's last row. Used by trainer/data/jpeg.py,
 * which falls back to OpenCV when this module is not built (it is an optional extension).
 *
 * decode(data, reduction, x0, y0, x1, y1) -> (pixels: bytearray, x, y, w, h, channels) | None
 *   data: the JPEG file's bytes; reduction: 1, 2, 4 or 8; [x0, x1) x [y0, y1): the wanted region in
 *   reduced pixels (clipped to the image). Returns the decoded region (x, y, w, h in reduced
 *   pixels: x may be rounded down and w up to the iMCU grid) as RGB (3 channels) or grey
 *   (1 channel), rows of w * channels bytes; None for colour spaces it does not convert (CMYK,
 *   YCCK). Raises ValueError with libjpeg's message on a fatal decoding error.
 * DCT and upsampling are libjpeg's defaults (islow, fancy), as OpenCV's decoder uses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
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

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(data, reduction, x0, y0, x1, y1) -> (pixels, x, y, w, h, channels) or None"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg_roi",
                                    "Region-of-interest JPEG decoding (libjpeg-turbo).", -1, methods};

PyMODINIT_FUNC PyInit__jpeg_roi(void) { return PyModule_Create(&module); }
