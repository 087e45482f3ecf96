/* nvc.models._motion_search: the cost the encoder's block matching evaluates most, in one pass.
 *
 * block_sad(cur, ref, mv, block) -> float32 (H/block, W/block): for each block, the sum over its
 * pixels of |cur - ref warped by the block's vector|, the warp bilinear with borders replicated
 * (grid_sample, align_corners=True), vectors in quarter pixels, constant over each block. The same
 * number as nvc.models.motion's `_block_sad(cur, warp(ref, _block_flow(mv, block)), block)` (to
 * float rounding), which builds a per-pixel flow and sampling grid for every candidate field: ~85
 * candidate fields a 720p P-frame made that search most of the encoder's time.
 *
 * cur, ref float32 (H, W) C-contiguous, mv int32 (2, H/block, W/block) (x, y). Runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../native/py_buffer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

void block_sad(const float* cur, const float* ref, const int32_t* mv, float* out, int h, int w, int block) {
  const int hb = h / block, wb = w / block;
  const float xmax = static_cast<float>(w - 1), ymax = static_cast<float>(h - 1);
  for (int by = 0; by < hb; ++by)
    for (int bx = 0; bx < wb; ++bx) {
      const int32_t vx = mv[by * wb + bx], vy = mv[hb * wb + by * wb + bx];
      double sad = 0;
      if ((vx & 3) == 0 && (vy & 3) == 0) {  // whole pixels: clamped copies, no blending
        const int dx = vx / 4, dy = vy / 4;
        for (int y = by * block; y < (by + 1) * block; ++y) {
          const float* c = cur + static_cast<size_t>(y) * w;
          const float* r = ref + static_cast<size_t>(std::min(std::max(y + dy, 0), h - 1)) * w;
          float row = 0;
          for (int x = bx * block; x < (bx + 1) * block; ++x) row += std::fabs(c[x] - r[std::min(std::max(x + dx, 0), w - 1)]);
          sad += row;
        }
      } else {
        const float fdx = static_cast<float>(vx) * 0.25f, fdy = static_cast<float>(vy) * 0.25f;
        for (int y = by * block; y < (by + 1) * block; ++y) {
          const float* c = cur + static_cast<size_t>(y) * w;
          const float sy = std::min(std::max(static_cast<float>(y) + fdy, 0.0f), ymax);
          const int y0 = static_cast<int>(sy), y1 = std::min(y0 + 1, h - 1);
          const float fy = sy - static_cast<float>(y0);
          const float* top = ref + static_cast<size_t>(y0) * w;
          const float* bottom = ref + static_cast<size_t>(y1) * w;
          float row = 0;
          for (int x = bx * block; x < (bx + 1) * block; ++x) {
            const float sx = std::min(std::max(static_cast<float>(x) + fdx, 0.0f), xmax);
            const int x0 = static_cast<int>(sx), x1 = std::min(x0 + 1, w - 1);
            const float fx = sx - static_cast<float>(x0);
            const float t = (1 - fx) * top[x0] + fx * top[x1];
            const float u = (1 - fx) * bottom[x0] + fx * bottom[x1];
            row += std::fabs(c[x] - ((1 - fy) * t + fy * u));
          }
          sad += row;
        }
      }
      out[by * wb + bx] = static_cast<float>(sad);
    }
}

PyObject* py_block_sad(PyObject*, PyObject* args) {
  PyObject *c, *r, *m, *o;
  int block;
  if (!PyArg_ParseTuple(args, "OOOOi:block_sad", &c, &r, &m, &o, &block)) return nullptr;
  Buffer cur, ref, mv, out;
  if (!cur.get_float32(c, "cur", 2) || !ref.get_float32(r, "ref", 2) || !mv.get_int32(m, 3, "mv") ||
      !out.get_float32(o, "out", 2, true))
    return nullptr;
  const Py_ssize_t h = cur.shape(0), w = cur.shape(1);
  if (!(block > 0 && h % block == 0 && w % block == 0 && h > 0 && w > 0 && ref.shape(0) == h && ref.shape(1) == w &&
        mv.shape(0) == 2 && mv.shape(1) == h / block && mv.shape(2) == w / block && out.shape(0) == h / block &&
        out.shape(1) == w / block)) {
    PyErr_SetString(PyExc_ValueError,
                    "block_sad: cur and ref (H, W) with H, W multiples of block, mv (2, H/block, W/block), "
                    "out (H/block, W/block)");
    return nullptr;
  }
  Py_BEGIN_ALLOW_THREADS
  block_sad(cur.f32(), ref.f32(), mv.i32(), out.f32_out(), static_cast<int>(h), static_cast<int>(w), block);
  Py_END_ALLOW_THREADS
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"block_sad", py_block_sad, METH_VARARGS,
     "block_sad(cur, ref, mv, out, block) -> None\n\n"
     "Per block, the SAD of cur against ref warped by the block's quarter-pel vector (bilinear,\n"
     "borders replicated): cur, ref float32 (H, W); mv int32 (2, H/block, W/block); out float32."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "nvc.models._motion_search",
                      "Block-matching cost of the encoder's motion search (see models/motion_search.cpp).", -1,
                      methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__motion_search() { return PyModule_Create(&module); }
