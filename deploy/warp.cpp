/* nvc.deploy._warp: the v2 P-frame's motion compensation in one pass, for the int8 decoder.
 *
 * The same function as nvc.models.motion.predict_packed (to float rounding): a block motion field
 * (one quarter-pel vector per 16x16 luma block) interpolated bilinearly between block centres
 * (F.interpolate, align_corners=False), and the reference warped with it (grid_sample: bilinear,
 * borders replicated, align_corners=True): luma at full resolution, chroma at half. The torch
 * version builds a per-pixel sampling grid (10 MB at 720p), unpacks luma, samples and repacks:
 * ~13 ms a 720p frame in the decoder. Here the flow of each pixel is interpolated on the fly (a
 * row's vertical blend once per block column, a column's horizontal weights from a table), and runs
 * of samples that one vector moves are blended with fixed weights (`warp_plane`).
 *
 * warp(ref, mv, out): ref and out float32 (6, H/2, W/2) C-contiguous packed YUV420 (luma phases
 * 0..3 = (row parity, column parity), then U, V), mv int32 (2, H/16, W/16) (x, y) quarter pixels.
 * Runs without the GIL, on the calling thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../native/py_buffer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int kBlock = 16;  // luma pixels per motion vector
constexpr float kUnits = 4.0f;  // quarter-pel

// F.interpolate(bilinear, align_corners=False) along one axis from n block centres to n * scale
// samples: for each output sample, its two source blocks and the weight of the second.
struct Axis {
  std::vector<int> lo, hi;
  std::vector<float> w;
  Axis(int n, int scale) : lo(n * scale), hi(n * scale), w(n * scale) {
    const float ratio = 1.0f / static_cast<float>(scale);
    for (int i = 0; i < n * scale; ++i) {
      float src = ratio * (static_cast<float>(i) + 0.5f) - 0.5f;
      if (src < 0) src = 0;
      const int i0 = static_cast<int>(src);
      lo[i] = i0, hi[i] = std::min(i0 + 1, n - 1), w[i] = src - static_cast<float>(i0);
    }
  }
};

// Warp one plane (h x w = hb*scale x wb*scale, row-major `src` -> `dst`) with the block field
// interpolated to `scale` samples per block. Along a row, the samples between two block centres
// whose (vertically blended) vectors are equal move by one constant vector: that run is a
// fixed-weight bilinear blend of two source rows (contiguous, vectorised), taken when it needs no
// border clamping; everything else takes the general per-sample path.
void warp_plane(const float* src, float* dst, const int32_t* mvx, const int32_t* mvy, int hb, int wb, int scale) {
  const int h = hb * scale, w = wb * scale;
  const float units = static_cast<float>(scale) / (kBlock * kUnits);  // quarter-pel -> plane pixels
  const Axis rows(hb, scale), cols(wb, scale);
  struct Run { int begin, end, c0, c1; };
  std::vector<Run> runs;
  for (int x = 0; x < w; ++x) {
    if (runs.empty() || runs.back().c0 != cols.lo[x] || runs.back().c1 != cols.hi[x])
      runs.push_back({x, x, cols.lo[x], cols.hi[x]});
    runs.back().end = x + 1;
  }
  std::vector<float> row_x(wb), row_y(wb);
  const float xmax = static_cast<float>(w - 1), ymax = static_cast<float>(h - 1);
  for (int y = 0; y < h; ++y) {
    const int r0 = rows.lo[y], r1 = rows.hi[y];
    const float a = rows.w[y];
    for (int b = 0; b < wb; ++b) {
      row_x[b] = (1 - a) * static_cast<float>(mvx[r0 * wb + b]) + a * static_cast<float>(mvx[r1 * wb + b]);
      row_y[b] = (1 - a) * static_cast<float>(mvy[r0 * wb + b]) + a * static_cast<float>(mvy[r1 * wb + b]);
    }
    float* out = dst + static_cast<size_t>(y) * w;
    for (const Run& run : runs) {
      const float vx = row_x[run.c0], vy = row_y[run.c0];
      if (vx == row_x[run.c1] && vy == row_y[run.c1]) {  // one vector for the whole run
        const float sx = vx * units, sy = std::min(std::max(static_cast<float>(y) + vy * units, 0.0f), ymax);
        const float fsx = std::floor(sx);
        const int shift = static_cast<int>(fsx);
        if (run.begin + shift >= 0 && run.end + shift <= w - 1) {
          const float fx = sx - fsx;
          const int y0 = static_cast<int>(sy), y1 = std::min(y0 + 1, h - 1);
          const float fy = sy - static_cast<float>(y0);
          const float* top = src + static_cast<size_t>(y0) * w + shift;
          const float* bottom = src + static_cast<size_t>(y1) * w + shift;
          for (int x = run.begin; x < run.end; ++x) {
            const float t = (1 - fx) * top[x] + fx * top[x + 1];
            const float u = (1 - fx) * bottom[x] + fx * bottom[x + 1];
            out[x] = (1 - fy) * t + fy * u;
          }
          continue;
        }
      }
      for (int x = run.begin; x < run.end; ++x) {
        const float c = cols.w[x];
        float sx = static_cast<float>(x) + ((1 - c) * row_x[run.c0] + c * row_x[run.c1]) * units;
        float sy = static_cast<float>(y) + ((1 - c) * row_y[run.c0] + c * row_y[run.c1]) * units;
        sx = std::min(std::max(sx, 0.0f), xmax);  // borders replicated
        sy = std::min(std::max(sy, 0.0f), ymax);
        const int x0 = static_cast<int>(sx), y0 = static_cast<int>(sy);
        const int x1 = std::min(x0 + 1, w - 1), y1 = std::min(y0 + 1, h - 1);
        const float fx = sx - static_cast<float>(x0), fy = sy - static_cast<float>(y0);
        const float* top = src + static_cast<size_t>(y0) * w;
        const float* bottom = src + static_cast<size_t>(y1) * w;
        const float t = (1 - fx) * top[x0] + fx * top[x1];
        const float u = (1 - fx) * bottom[x0] + fx * bottom[x1];
        out[x] = (1 - fy) * t + fy * u;
      }
    }
  }
}

// Luma between the packed 2x2 phases (4, h2, w2) and a plane (2*h2, 2*w2).
void unpack_luma(const float* packed, float* plane, int h2, int w2) {
  const size_t n = static_cast<size_t>(h2) * w2;
  for (int i = 0; i < h2; ++i)
    for (int a = 0; a < 2; ++a) {
      const float* p0 = packed + (2 * a) * n + static_cast<size_t>(i) * w2;
      const float* p1 = p0 + n;
      float* row = plane + static_cast<size_t>(2 * i + a) * 2 * w2;
      for (int j = 0; j < w2; ++j) row[2 * j] = p0[j], row[2 * j + 1] = p1[j];
    }
}

void pack_luma(const float* plane, float* packed, int h2, int w2) {
  const size_t n = static_cast<size_t>(h2) * w2;
  for (int i = 0; i < h2; ++i)
    for (int a = 0; a < 2; ++a) {
      float* p0 = packed + (2 * a) * n + static_cast<size_t>(i) * w2;
      float* p1 = p0 + n;
      const float* row = plane + static_cast<size_t>(2 * i + a) * 2 * w2;
      for (int j = 0; j < w2; ++j) p0[j] = row[2 * j], p1[j] = row[2 * j + 1];
    }
}

void warp(const float* ref, const int32_t* mv, float* out, int h2, int w2) {
  const int hb = h2 / (kBlock / 2), wb = w2 / (kBlock / 2);
  const size_t plane = static_cast<size_t>(h2) * w2;
  const int32_t *mvx = mv, *mvy = mv + static_cast<size_t>(hb) * wb;
  thread_local std::vector<float> luma, warped;  // kept: fresh 4 MB buffers cost page faults every frame
  luma.resize(4 * plane), warped.resize(4 * plane);
  unpack_luma(ref, luma.data(), h2, w2);
  warp_plane(luma.data(), warped.data(), mvx, mvy, hb, wb, kBlock);
  pack_luma(warped.data(), out, h2, w2);
  for (int k = 4; k < 6; ++k) warp_plane(ref + k * plane, out + k * plane, mvx, mvy, hb, wb, kBlock / 2);
}

PyObject* py_warp(PyObject*, PyObject* args) {
  PyObject *r, *m, *o;
  if (!PyArg_ParseTuple(args, "OOO:warp", &r, &m, &o)) return nullptr;
  Buffer ref, mv, out;
  if (!ref.get_float32(r, "ref", 3) || !mv.get_int32(m, 3, "mv") || !out.get_float32(o, "out", 3, true)) return nullptr;
  const Py_ssize_t h2 = ref.shape(1), w2 = ref.shape(2);
  if (!(ref.shape(0) == 6 && h2 % 8 == 0 && w2 % 8 == 0 && h2 > 0 && w2 > 0 && mv.shape(0) == 2 &&
        mv.shape(1) == h2 / 8 && mv.shape(2) == w2 / 8 && out.shape(0) == 6 && out.shape(1) == h2 &&
        out.shape(2) == w2 && out.view.buf != ref.view.buf)) {
    PyErr_SetString(PyExc_ValueError,
                    "warp: ref and out must be distinct (6, H/2, W/2) with H, W multiples of 16, mv (2, H/16, W/16)");
    return nullptr;
  }
  Py_BEGIN_ALLOW_THREADS
  warp(ref.f32(), mv.i32(), out.f32_out(), static_cast<int>(h2), static_cast<int>(w2));
  Py_END_ALLOW_THREADS
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"warp", py_warp, METH_VARARGS,
     "warp(ref, mv, out) -> None\n\n"
     "The motion-compensated prediction of a packed YUV420 frame (nvc.models.motion.predict_packed):\n"
     "ref, out float32 (6, H/2, W/2); mv int32 (2, H/16, W/16), quarter pixels."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "nvc.deploy._warp",
                      "The v2 P-frame's motion compensation in one pass (see deploy/warp.cpp).", -1, methods,
                      nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__warp() { return PyModule_Create(&module); }
