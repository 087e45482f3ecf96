/* Numpy arrays into the native extensions (entropy/rans.cpp, deploy/warp.cpp,
 * models/motion_search.cpp): a Py_buffer that is released when it goes out of scope, with checks
 * of type, dimensions and contiguity that raise TypeError. Include after <Python.h>.
 */
#pragma once

#include <cstdint>
#include <cstring>

struct Buffer {
  Py_buffer view{};
  bool held = false;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    if (held) PyBuffer_Release(&view);
  }
  bool get(PyObject* obj, int flags) {
    held = PyObject_GetBuffer(obj, &view, flags) == 0;
    return held;
  }
  // A C-contiguous int32 array with `ndim` dimensions.
  bool get_int32(PyObject* obj, int ndim, const char* name) { return get_typed(obj, ndim, false, name, false); }
  // A C-contiguous float32 array with `ndim` dimensions (1 by default), writable if asked.
  bool get_float32(PyObject* obj, const char* name, int ndim = 1, bool writable = false) {
    return get_typed(obj, ndim, true, name, writable);
  }
  bool get_typed(PyObject* obj, int ndim, bool float32, const char* name, bool writable) {
    const char* type = float32 ? "float32" : "int32";
    if (!get(obj, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0))) {
      PyErr_Clear();
      PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s %s array", name, writable ? " writable" : "", type);
      return false;
    }
    const char* f = view.format ? view.format : "B";
    if (*f == '@' || *f == '=' || *f == '<') ++f;
    const bool ok = view.itemsize == 4 && (float32 ? !std::strcmp(f, "f")
                                                   : !std::strcmp(f, "i") || (sizeof(long) == 4 && !std::strcmp(f, "l")));
    if (!ok || view.ndim != ndim) {
      PyErr_Format(PyExc_TypeError, "%s must be a %d-D %s array", name, ndim, type);
      return false;
    }
    return true;
  }
  size_t size() const { return static_cast<size_t>(view.len / 4); }
  Py_ssize_t shape(int i) const { return view.shape[i]; }
  const int32_t* i32() const { return static_cast<const int32_t*>(view.buf); }
  const float* f32() const { return static_cast<const float*>(view.buf); }
  float* f32_out() const { return static_cast<float*>(view.buf); }
};
