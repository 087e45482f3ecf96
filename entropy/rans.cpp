/* nvc.entropy._rans: table-driven rANS coder, byte-compatible with CompressAI's
 * RansEncoder.encode_with_indexes / RansDecoder.decode_with_indexes, and its compact form.
 *
 * Coder: rANS (J. Duda, "Asymmetric numeral systems", arXiv:1311.2540, 2013) with the 64-bit state
 * and 32-bit renormalisation of F. Giesen's ryg_rans (rans64.h), as used by CompressAI.
 *
 * Byte format of one substream (little-endian 32-bit words):
 *   - the state x lives in [L, 2^63) with L = 2^31; the encoder starts at x = L and codes the symbols
 *     last to first, emitting the low 32 bits of x whenever a step would leave the interval; at the
 *     end it writes x itself (low word, then high word). The stream is
 *       [x_lo, x_hi, words in reverse order of emission]
 *     so the decoder reads it front to back, symbols first to last, and ends with x = L exactly
 *     after consuming every word (this decoder checks both; CompressAI does not).
 *   - compact streams (container version 5 on; `compact` arguments): the encoder starts at x = 1, so
 *     the state holds the first ~31 bits of information that L wasted (~3 bytes a stream less). The
 *     decoder reads a word below L only while words remain: the symbols coded before the first
 *     emission (x still below L) come last and find none, and it ends at x = 1. x = 0 never occurs
 *     (coding maps x >= 1 to x >= 1), so a decoder that meets it has a damaged stream. A stream that
 *     emitted nothing is x alone in its significant bytes (1..8): a length of at most 8 means no words.
 *   - a table symbol s of row r (CDF c, 16-bit precision, c[0] = 0, c[len - 1] = 2^16) codes as
 *     x -> (x / f << 16) + x % f + c[s] with f = c[s + 1] - c[s]; the decoder finds s from the
 *     slot x & 0xffff with c[s] <= slot < c[s + 1].
 *   - value v = symbol - offset[r]; v in [0, len - 2) is coded as itself; anything else codes the
 *     escape symbol len - 2 followed by "bypass" digits (a rANS step with 4 bits, freq 1:
 *     x -> x << 4 | d): raw = -2v - 1 (v < 0) or 2 (v - (len - 2)); n = number of 4-bit digits of
 *     raw; n as digits 15, 15, ..., n % 15 (a 15 means "more follows"); then raw's digits, least
 *     significant first.
 *
 * All loops are bounded by the input sizes; reading past the end of a stream, an index outside the
 * tables, an escape longer than 8 digits or a bad final state are errors (ValueError), never UB.
 * Coding runs without the GIL; the *_many functions code independent substreams on std::threads.
 *
 * Beside the coder, decoding loops too slow in Python (see "decoding helpers" below): scale indexes
 * (torch.bucketize), the motion field's merge-mode rebuild and its context-coded symbols.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../native/py_buffer.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the stream format is little-endian; this implementation assumes a little-endian host"
#endif

#ifndef RANS_BUCKET_BITS
#define RANS_BUCKET_BITS 8  // 2^8 x 16-bit entries per row: measured best of 6..16 (cache-resident)
#endif

namespace {

constexpr int kPrecision = 16;
constexpr uint32_t kTotal = 1u << kPrecision;
constexpr uint64_t kRansL = 1ull << 31;  // lower bound of the normalised state interval
constexpr int kBypassBits = 4;
constexpr uint32_t kBypassMax = (1u << kBypassBits) - 1;
constexpr uint32_t kMaxDigits = 8;  // raw escape values have at most 32 bits
constexpr int kBucketBits = RANS_BUCKET_BITS;
constexpr int kBucketShift = kPrecision - kBucketBits;

// Validated copy of the CDF tables plus a decode accelerator: for each row, the symbol holding the
// first slot of each of 2^kBucketBits equal slot ranges; decoding walks forward from there.
struct Tables {
  uint32_t rows = 0, stride = 0;
  std::vector<uint32_t> cdf;      // rows x stride
  std::vector<int32_t> escape;    // lengths - 2: the escape symbol of each row
  std::vector<int32_t> offset;
  std::vector<uint16_t> bucket;   // rows x 2^kBucketBits
};

std::string build_tables(const int32_t* cdfs, size_t rows, size_t stride, const int32_t* lengths,
                         const int32_t* offsets, Tables& t) {
  if (rows == 0 || rows > (1u << 24)) return "the CDF table must have between 1 and 2^24 rows";
  t.rows = static_cast<uint32_t>(rows);
  t.stride = static_cast<uint32_t>(stride);
  t.cdf.assign(cdfs, cdfs + rows * stride);  // copied first, so that checks and use see the same values
  t.escape.assign(lengths, lengths + rows);
  t.offset.assign(offsets, offsets + rows);
  t.bucket.resize(rows << kBucketBits);
  for (size_t r = 0; r < rows; ++r) {
    const int64_t len = t.escape[r];
    auto row = [r](const char* what) { return "CDF row " + std::to_string(r) + ": " + what; };
    if (len < 2 || len > static_cast<int64_t>(stride)) return row("length outside [2, row width]");
    if (static_cast<int64_t>(t.offset[r]) + len > INT32_MAX) return row("offset too large");
    const uint32_t* c = &t.cdf[r * stride];
    if (c[0] != 0 || c[len - 1] != kTotal) return row("must start at 0 and end at 65536");
    bool increasing = true;
    for (int64_t j = 0; j + 1 < len; ++j) increasing &= c[j + 1] > c[j];
    if (!increasing) return row("must be strictly increasing");
    uint16_t* bucket = &t.bucket[r << kBucketBits];
    for (uint32_t s = 0, k = 0; s + 1 < len; ++s)  // buckets whose first slot lies in [c[s], c[s + 1])
      for (const uint32_t k_end = (c[s + 1] + (1u << kBucketShift) - 1) >> kBucketShift; k < k_end; ++k)
        bucket[k] = static_cast<uint16_t>(s);
    t.escape[r] = static_cast<int32_t>(len - 2);
  }
  return "";
}

inline uint32_t load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

const char* const kTruncated = "truncated or corrupt stream (read past the end)";

// The encoder's initial state, which the decoder must end at: L (CompressAI's streams) or 1 (compact).
inline uint64_t initial_state(bool compact) { return compact ? 1 : kRansL; }

// The decoder's side of one substream: the state and the words still to read.
class Reader {
 public:
  // "" or what is wrong with the stream's first 8 bytes.
  std::string start(const uint8_t* data, size_t nbytes, bool compact) {
    compact_ = compact;
    if (compact && nbytes <= 8) {  // the final state alone, in its significant bytes
      uint8_t state[8] = {};
      std::memcpy(state, data, nbytes);
      x_ = load32(state) | static_cast<uint64_t>(load32(state + 4)) << 32;
      p_ = end_ = data + nbytes;
      return "";
    }
    if (nbytes < 8 || nbytes % 4) return "truncated stream (length must be a multiple of 4, at least 8)";
    p_ = data + 8, end_ = data + nbytes;
    x_ = load32(data) | static_cast<uint64_t>(load32(data + 4)) << 32;
    return "";
  }

  // Decodes one symbol of row r (< t.rows: the callers check) into out; nullptr or the error.
  const char* symbol(const Tables& t, uint32_t r, int32_t& out) {
    const uint32_t* cdf = t.cdf.data() + static_cast<size_t>(r) * t.stride;
    const uint32_t slot = static_cast<uint32_t>(x_) & (kTotal - 1);
    uint32_t s = t.bucket[static_cast<size_t>(r) << kBucketBits | slot >> kBucketShift];
    while (cdf[s + 1] <= slot) ++s;  // stops at the row's last entry (2^16) at the latest
    const uint32_t start = cdf[s];
    x_ = (cdf[s + 1] - start) * (x_ >> kPrecision) + slot - start;
    if (!renormalise()) return kTruncated;
    int64_t value = s;
    if (static_cast<int32_t>(s) == t.escape[r]) {
      uint32_t v;
      if (!bits(v)) return kTruncated;
      uint32_t digits = v;
      while (v == kBypassMax && digits <= kMaxDigits) {
        if (!bits(v)) return kTruncated;
        digits += v;
      }
      if (digits > kMaxDigits) return "corrupt stream (escape too long)";
      uint64_t raw = 0;
      for (uint32_t j = 0; j < digits; ++j) {
        if (!bits(v)) return kTruncated;
        raw |= static_cast<uint64_t>(v) << (kBypassBits * j);
      }
      const int64_t half = static_cast<int64_t>(raw >> 1);
      value = raw & 1 ? -half - 1 : half + t.escape[r];
      if (value + t.offset[r] < INT32_MIN || value + t.offset[r] > INT32_MAX)
        return "corrupt stream (escaped value out of int32 range)";
    }
    out = static_cast<int32_t>(value + t.offset[r]);
    return nullptr;
  }

  // "" when every word was read and the state is back at its start, as after a whole stream.
  std::string finish() const {
    if (p_ != end_) return "corrupt stream (data left after the last symbol)";
    if (x_ != initial_state(compact_)) return "corrupt stream (bad final state)";
    return "";
  }

 private:
  bool bits(uint32_t& v) {  // one bypass digit
    v = static_cast<uint32_t>(x_) & kBypassMax;
    x_ >>= kBypassBits;
    return renormalise();
  }

  // Reads a word where the encoder emitted one: below L, while words remain. A compact stream's
  // state is below L, with no word left to read, for the symbols coded before its first emission
  // (but never 0). False: a damaged stream.
  bool renormalise() {
    if (x_ < kRansL) {
      if (p_ == end_) return compact_ && x_ != 0;
      x_ = x_ << 32 | load32(p_);
      p_ += 4;
    }
    return true;
  }

  const uint8_t* p_ = nullptr;
  const uint8_t* end_ = nullptr;
  uint64_t x_ = 0;
  bool compact_ = false;
};

std::string decode_stream(const Tables& t, const uint8_t* data, size_t nbytes, const int32_t* idx,
                          size_t n, int32_t* out, bool compact) {
  if (n == 0) return nbytes ? "data for an empty substream" : "";
  Reader reader;
  std::string error = reader.start(data, nbytes, compact);
  if (!error.empty()) return error;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t r = static_cast<uint32_t>(idx[i]);  // read once: the array may change under us
    if (r >= t.rows) return "table index " + std::to_string(static_cast<int32_t>(r)) + " out of range";
    if (const char* e = reader.symbol(t, r, out[i])) return e;
  }
  return reader.finish();
}

// Codes n symbols into `words`; the finished stream is the first `nbytes` bytes of them.
std::string encode_stream(const Tables& t, const int32_t* sym, const int32_t* idx, size_t n,
                          std::vector<uint32_t>& words, size_t& nbytes, bool compact) {
  words.clear();
  nbytes = 0;
  if (n == 0) return "";
  words.reserve(n / 8 + 16);
  uint64_t x = initial_state(compact);
  auto put = [&](uint32_t start, uint32_t freq) {
    if (x >= ((kRansL >> kPrecision) << 32) * freq) {
      words.push_back(static_cast<uint32_t>(x));
      x >>= 32;
    }
    x = (x / freq << kPrecision) + x % freq + start;
  };
  auto put_bits = [&](uint32_t v) {
    if (x >= (kRansL >> kBypassBits) << 32) {
      words.push_back(static_cast<uint32_t>(x));
      x >>= 32;
    }
    x = x << kBypassBits | v;
  };
  for (size_t i = n; i-- > 0;) {  // last symbol first; within a symbol, last step first
    const uint32_t r = static_cast<uint32_t>(idx[i]);
    if (r >= t.rows) return "table index " + std::to_string(static_cast<int32_t>(r)) + " out of range";
    const int32_t escape = t.escape[r];
    const int32_t symbol = sym[i];
    int64_t value = static_cast<int64_t>(symbol) - t.offset[r];
    if (value < 0 || value >= escape) {
      const uint64_t raw = static_cast<uint64_t>(value < 0 ? -2 * value - 1 : 2 * (value - escape));
      if (raw > INT32_MAX) return "symbol " + std::to_string(symbol) + " too far outside its table to escape";
      uint32_t digits = 0;
      while (raw >> (kBypassBits * digits)) ++digits;
      for (uint32_t j = digits; j-- > 0;) put_bits((raw >> (kBypassBits * j)) & kBypassMax);
      put_bits(digits % kBypassMax);
      for (uint32_t k = digits / kBypassMax; k > 0; --k) put_bits(kBypassMax);
      value = escape;
    }
    const uint32_t* cdf = &t.cdf[static_cast<size_t>(r) * t.stride];
    put(cdf[value], cdf[value + 1] - cdf[value]);
  }
  const bool state_only = words.empty();
  words.push_back(static_cast<uint32_t>(x >> 32));
  words.push_back(static_cast<uint32_t>(x));
  std::reverse(words.begin(), words.end());
  nbytes = words.size() * 4;
  if (compact && state_only)  // the state alone: its significant bytes
    for (nbytes = 0; nbytes < 8 && x >> (8 * nbytes); ++nbytes) {}
  return "";
}

// Runs f(0) ... f(n - 1) on up to `threads` threads (the caller's included).
template <class F>
void parallel_for(size_t n, size_t threads, F&& f) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) f(i);
  };
  std::vector<std::thread> pool;
  for (size_t k = 1; k < std::min(threads, n); ++k) {
    try {
      pool.emplace_back(work);
    } catch (...) {
      break;  // fewer threads: the others pick up the work
    }
  }
  work();
  for (auto& th : pool) th.join();
}

// ---------------------------------------------------------------------------------------------
// Python glue: buffers in, bytes / numpy arrays out.

struct TableBuffers {
  Buffer cdfs, lengths, offsets;
  bool get(PyObject* c, PyObject* l, PyObject* o) {
    if (!cdfs.get_int32(c, 2, "cdfs") || !lengths.get_int32(l, 1, "lengths") || !offsets.get_int32(o, 1, "offsets"))
      return false;
    const Py_ssize_t rows = cdfs.view.shape[0];
    if (lengths.view.shape[0] != rows || offsets.view.shape[0] != rows) {
      PyErr_SetString(PyExc_ValueError, "cdfs, lengths and offsets must have one entry per table row");
      return false;
    }
    return true;
  }
  std::string build(Tables& t) const {
    return build_tables(cdfs.i32(), cdfs.view.shape[0], cdfs.view.shape[1], lengths.i32(), offsets.i32(), t);
  }
};

PyObject* new_int32_array(size_t n) {
  static PyObject* empty = nullptr;  // numpy.empty, imported on first use
  if (!empty) {
    PyObject* np = PyImport_ImportModule("numpy");
    if (!np) return nullptr;
    empty = PyObject_GetAttrString(np, "empty");
    Py_DECREF(np);
    if (!empty) return nullptr;
  }
  return PyObject_CallFunction(empty, "ns", static_cast<Py_ssize_t>(n), "int32");
}

// Items of a list/tuple (borrowed references, kept alive by `fast`).
bool items(PyObject* seq, const char* name, PyObject*& fast, std::vector<PyObject*>& out) {
  fast = PySequence_Fast(seq, name);
  if (!fast) return false;
  PyObject** it = PySequence_Fast_ITEMS(fast);
  out.assign(it, it + PySequence_Fast_GET_SIZE(fast));
  return true;
}

bool check_threads(int threads) {
  if (threads < 1 || threads > 1024) {
    PyErr_SetString(PyExc_ValueError, "threads must be in [1, 1024]");
    return false;
  }
  return true;
}

bool raise_errors(const std::vector<std::string>& errors, bool many) {
  for (size_t i = 0; i < errors.size(); ++i) {
    if (errors[i].empty()) continue;
    if (many)
      PyErr_Format(PyExc_ValueError, "substream %zu: %s", i, errors[i].c_str());
    else
      PyErr_SetString(PyExc_ValueError, errors[i].c_str());
    return true;
  }
  return false;
}

// Encodes streams[i] = (symbols, indexes); returns a new list of bytes or nullptr.
PyObject* encode_impl(const std::vector<PyObject*>& symbols, const std::vector<PyObject*>& indexes,
                      PyObject* c, PyObject* l, PyObject* o, int threads, bool many, bool compact) {
  if (symbols.size() != indexes.size()) {
    PyErr_SetString(PyExc_ValueError, "need as many index arrays as symbol arrays");
    return nullptr;
  }
  const size_t n = symbols.size();
  TableBuffers tb;
  if (!tb.get(c, l, o) || !check_threads(threads)) return nullptr;
  std::vector<Buffer> sym(n), idx(n);
  for (size_t i = 0; i < n; ++i) {
    if (!sym[i].get_int32(symbols[i], 1, "symbols") || !idx[i].get_int32(indexes[i], 1, "indexes")) return nullptr;
    if (sym[i].size() != idx[i].size()) {
      PyErr_Format(PyExc_ValueError, "%zu symbols but %zu indexes", sym[i].size(), idx[i].size());
      return nullptr;
    }
  }
  Tables t;
  std::vector<std::vector<uint32_t>> words(n);
  std::vector<size_t> nbytes(n);
  std::vector<std::string> errors(n);
  std::string table_error;
  Py_BEGIN_ALLOW_THREADS
  try {
    table_error = tb.build(t);
    if (table_error.empty())
      parallel_for(n, threads, [&](size_t i) {
        try {
          errors[i] = encode_stream(t, sym[i].i32(), idx[i].i32(), sym[i].size(), words[i], nbytes[i], compact);
        } catch (...) {
          errors[i] = "out of memory";
        }
      });
  } catch (...) {
    table_error = "out of memory";
  }
  Py_END_ALLOW_THREADS
  if (!table_error.empty()) {
    PyErr_SetString(PyExc_ValueError, table_error.c_str());
    return nullptr;
  }
  if (raise_errors(errors, many)) return nullptr;
  PyObject* result = PyList_New(static_cast<Py_ssize_t>(n));
  for (size_t i = 0; result && i < n; ++i) {
    PyObject* b = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(words[i].data()),
                                            static_cast<Py_ssize_t>(nbytes[i]));
    if (!b) Py_CLEAR(result);
    else PyList_SET_ITEM(result, static_cast<Py_ssize_t>(i), b);
  }
  return result;
}

// Decodes streams[i] = (data, indexes); returns a new list of int32 arrays or nullptr.
PyObject* decode_impl(const std::vector<PyObject*>& datas, const std::vector<PyObject*>& indexes,
                      PyObject* c, PyObject* l, PyObject* o, int threads, bool many, bool compact) {
  if (datas.size() != indexes.size()) {
    PyErr_SetString(PyExc_ValueError, "need as many index arrays as streams");
    return nullptr;
  }
  const size_t n = datas.size();
  TableBuffers tb;
  if (!tb.get(c, l, o) || !check_threads(threads)) return nullptr;
  std::vector<Buffer> data(n), idx(n), out(n);
  PyObject* result = PyList_New(static_cast<Py_ssize_t>(n));
  if (!result) return nullptr;
  for (size_t i = 0; i < n; ++i) {
    if (!data[i].get(datas[i], PyBUF_SIMPLE)) {
      PyErr_Clear();
      PyErr_SetString(PyExc_TypeError, "data must be a bytes-like object");
    } else if (idx[i].get_int32(indexes[i], 1, "indexes")) {
      PyObject* arr = new_int32_array(idx[i].size());
      if (arr) {
        PyList_SET_ITEM(result, static_cast<Py_ssize_t>(i), arr);
        if (out[i].get(arr, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)) continue;
      }
    }
    Py_DECREF(result);
    return nullptr;
  }
  Tables t;
  std::vector<std::string> errors(n);
  std::string table_error;
  Py_BEGIN_ALLOW_THREADS
  try {
    table_error = tb.build(t);
    if (table_error.empty())
      parallel_for(n, threads, [&](size_t i) {
        try {
          errors[i] = decode_stream(t, static_cast<const uint8_t*>(data[i].view.buf),
                                    static_cast<size_t>(data[i].view.len), idx[i].i32(), idx[i].size(),
                                    static_cast<int32_t*>(out[i].view.buf), compact);
        } catch (...) {
          errors[i] = "out of memory";
        }
      });
  } catch (...) {
    table_error = "out of memory";
  }
  Py_END_ALLOW_THREADS
  if (!table_error.empty()) PyErr_SetString(PyExc_ValueError, table_error.c_str());
  if (!table_error.empty() || raise_errors(errors, many)) {
    Py_DECREF(result);
    return nullptr;
  }
  return result;
}

PyObject* single(PyObject* list) {
  if (!list) return nullptr;
  PyObject* item = PyList_GET_ITEM(list, 0);
  Py_INCREF(item);
  Py_DECREF(list);
  return item;
}

PyObject* py_encode(PyObject*, PyObject* args) {
  PyObject *s, *i, *c, *l, *o;
  int compact = 0;
  if (!PyArg_ParseTuple(args, "OOOOO|p:encode", &s, &i, &c, &l, &o, &compact)) return nullptr;
  return single(encode_impl({s}, {i}, c, l, o, 1, false, compact));
}

PyObject* py_decode(PyObject*, PyObject* args) {
  PyObject *d, *i, *c, *l, *o;
  int compact = 0;
  if (!PyArg_ParseTuple(args, "OOOOO|p:decode", &d, &i, &c, &l, &o, &compact)) return nullptr;
  return single(decode_impl({d}, {i}, c, l, o, 1, false, compact));
}

PyObject* many(PyObject* args, const char* format, bool encode) {
  PyObject *a, *i, *c, *l, *o, *fa = nullptr, *fi = nullptr, *result = nullptr;
  int threads = 1, compact = 0;
  std::vector<PyObject*> va, vi;
  if (PyArg_ParseTuple(args, format, &a, &i, &c, &l, &o, &threads, &compact) &&
      items(a, "expected a sequence of arrays", fa, va) && items(i, "expected a sequence of index arrays", fi, vi))
    result = encode ? encode_impl(va, vi, c, l, o, threads, true, compact)
                    : decode_impl(va, vi, c, l, o, threads, true, compact);
  Py_XDECREF(fa);
  Py_XDECREF(fi);
  return result;
}

PyObject* py_encode_many(PyObject*, PyObject* args) { return many(args, "OOOOO|ip:encode_many", true); }
PyObject* py_decode_many(PyObject*, PyObject* args) { return many(args, "OOOOO|ip:decode_many", false); }


// ---------------------------------------------------------------- decoding helpers beside the coder
// Loops of the decoder that are too slow in Python: the scale index of every symbol
// (torch.bucketize), the raster rebuild of a motion field from its merge modes, and the decoding of
// a motion stream, whose CDF rows depend on the modes before them. All release the GIL, as the coder
// does, so they run beside synthesis in the pipelined decoder.

// #{j : boundaries[j] < v} per value (torch.bucketize(v, boundaries), right=False); NaN -> n.
PyObject* py_scale_indexes(PyObject*, PyObject* args) {
  PyObject *v, *b;
  if (!PyArg_ParseTuple(args, "OO:scale_indexes", &v, &b)) return nullptr;
  Buffer values, bounds, out;
  if (!values.get_float32(v, "values") || !bounds.get_float32(b, "boundaries")) return nullptr;
  const size_t n = values.size(), nb = bounds.size();
  PyObject* arr = new_int32_array(n);
  if (!arr) return nullptr;
  if (!out.get(arr, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)) {
    Py_DECREF(arr);
    return nullptr;
  }
  const float* x = values.f32();
  const float* t = bounds.f32();
  int32_t* o = static_cast<int32_t*>(out.view.buf);
  bool sorted = true;
  for (size_t j = 0; j + 1 < nb; ++j) sorted &= t[j] <= t[j + 1];
  if (!sorted) {
    Py_DECREF(arr);
    PyErr_SetString(PyExc_ValueError, "boundaries must be sorted");
    return nullptr;
  }
  Py_BEGIN_ALLOW_THREADS
  if (nb > 0 && t[0] > 0.0f) {
    // Positive boundaries (scale tables): a float's bits, read as an integer, order positive floats,
    // so its top 13 bits (exponent and 4 mantissa bits: 1/16-octave buckets) index a table of the
    // count of boundaries below the bucket; a short walk finishes the count exactly.
    constexpr int kShift = 19;
    std::vector<int32_t> below(1u << (32 - kShift - 1));
    for (size_t k = 0; k < below.size(); ++k) {
      const uint32_t bits = static_cast<uint32_t>(k) << kShift;
      float start;
      std::memcpy(&start, &bits, 4);
      below[k] = static_cast<int32_t>(std::lower_bound(t, t + nb, start) - t);
    }
    for (size_t i = 0; i < n; ++i) {
      const float xi = x[i];
      uint32_t bits;
      std::memcpy(&bits, &xi, 4);
      if (xi != xi) {
        o[i] = static_cast<int32_t>(nb);
      } else if (!(xi > 0.0f)) {
        o[i] = 0;
      } else {
        int32_t j = below[bits >> kShift];
        while (j < static_cast<int32_t>(nb) && t[j] < xi) ++j;
        o[i] = j;
      }
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      const float xi = x[i];
      o[i] = xi != xi ? static_cast<int32_t>(nb) : static_cast<int32_t>(std::lower_bound(t, t + nb, xi) - t);
    }
  }
  Py_END_ALLOW_THREADS
  return arr;
}

// The motion field of entropy/motion.py's merge modes (its docstring defines them): modes (H, W)
// int32, residuals (N, 2) int32 of the EXPLICIT blocks in raster order -> (2, H, W) int32 vectors.
enum MotionMode : int32_t { kMedian = 0, kLeft = 1, kTop = 2, kCorner = 3, kZero = -2, kExplicit = -1 };

inline int32_t median3(int32_t a, int32_t b, int32_t c) { return std::max(std::min(a, b), std::min(std::max(a, b), c)); }

std::string motion_field(const int32_t* modes, size_t h, size_t w, const int32_t* res, size_t n_res, int32_t* out) {
  int32_t* vx = out;
  int32_t* vy = out + h * w;
  size_t r = 0;
  constexpr int64_t kLimit = 1 << 16;
  for (size_t y = 0; y < h; ++y)
    for (size_t x = 0; x < w; ++x) {
      const size_t i = y * w + x;
      const int32_t m = modes[i];
      const bool has_left = x > 0, has_top = y > 0;
      // the corner: top-right, or top-left in the last column (none on the first row or when w == 1)
      const bool has_corner = has_top && w > 1;
      const size_t corner = has_corner ? (x + 1 < w ? i - w + 1 : i - w - 1) : 0;
      int64_t px, py;
      if (m == kLeft && has_left) {
        px = vx[i - 1], py = vy[i - 1];
      } else if (m == kTop && has_top) {
        px = vx[i - w], py = vy[i - w];
      } else if (m == kZero) {
        px = py = 0;
      } else if (m == kCorner && has_corner) {
        px = vx[corner], py = vy[corner];
      } else if (m == kMedian || m == kExplicit) {
        if (!has_top) {
          px = has_left ? vx[i - 1] : 0, py = has_left ? vy[i - 1] : 0;
        } else if (!has_left) {
          px = vx[i - w], py = vy[i - w];
        } else {
          px = median3(vx[i - 1], vx[i - w], vx[corner]);
          py = median3(vy[i - 1], vy[i - w], vy[corner]);
        }
        if (m == kExplicit) {
          if (r >= n_res) return "malformed motion stream (too few residuals)";
          px += res[2 * r], py += res[2 * r + 1];
          ++r;
        }
      } else {
        return "malformed motion stream (bad mode)";
      }
      if (px > kLimit || px < -kLimit || py > kLimit || py < -kLimit)
        return "malformed motion stream (vectors out of range)";
      vx[i] = static_cast<int32_t>(px), vy[i] = static_cast<int32_t>(py);
    }
  if (r != n_res) return "malformed motion stream (too many residuals)";
  return "";
}

PyObject* py_motion_field(PyObject*, PyObject* args) {
  PyObject *m, *rs;
  if (!PyArg_ParseTuple(args, "OO:motion_field", &m, &rs)) return nullptr;
  Buffer modes, res, out;
  if (!modes.get_int32(m, 2, "modes") || !res.get_int32(rs, 2, "residuals")) return nullptr;
  if (res.view.shape[1] != 2) {
    PyErr_SetString(PyExc_TypeError, "residuals must have shape (N, 2)");
    return nullptr;
  }
  const size_t h = static_cast<size_t>(modes.view.shape[0]), w = static_cast<size_t>(modes.view.shape[1]);
  PyObject* arr = new_int32_array(2 * h * w);
  if (!arr) return nullptr;
  if (!out.get(arr, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)) {
    Py_DECREF(arr);
    return nullptr;
  }
  std::string error;
  Py_BEGIN_ALLOW_THREADS
  error = motion_field(modes.i32(), h, w, res.i32(), static_cast<size_t>(res.view.shape[0]),
                       static_cast<int32_t*>(out.view.buf));
  Py_END_ALLOW_THREADS
  if (!error.empty()) {
    Py_DECREF(arr);
    PyErr_SetString(PyExc_ValueError, error.c_str());
    return nullptr;
  }
  return arr;
}

// The symbols of a motion stream (entropy/motion.py): the merge modes in raster order, each with
// CDF row 4 x class(left) + class(top) (class 0 for a missing neighbour, 1 EXPLICIT, 2 MEDIAN, 3 any
// other; `mode_contexts`), then for each coded residual component (row res_rows[c]) one value per
// EXPLICIT block. Sequential: a mode's row depends on the modes before it. out: h*w modes, then the
// residuals, component by component; returns the number of EXPLICIT blocks through n_explicit.
inline uint32_t mode_class(int32_t m) { return m == kExplicit ? 1 : m == kMedian ? 2 : 3; }

std::string decode_motion(const Tables& t, const uint8_t* data, size_t nbytes, size_t h, size_t w,
                          const std::vector<uint32_t>& res_rows, std::vector<int32_t>& out, bool compact) {
  if (t.rows < 16) return "the motion tables need 16 mode rows";
  for (const uint32_t r : res_rows)
    if (r >= t.rows) return "residual row out of range";
  Reader reader;
  std::string error = reader.start(data, nbytes, compact);
  if (!error.empty()) return error;
  out.assign(h * w, 0);
  size_t explicit_blocks = 0;
  for (size_t y = 0; y < h; ++y)
    for (size_t x = 0; x < w; ++x) {
      const size_t i = y * w + x;
      const uint32_t left = x ? mode_class(out[i - 1]) : 0, top = y ? mode_class(out[i - w]) : 0;
      if (const char* e = reader.symbol(t, 4 * left + top, out[i])) return e;
      explicit_blocks += out[i] == kExplicit;
    }
  if (explicit_blocks == 0) return "no explicit vector";
  out.resize(h * w + explicit_blocks * res_rows.size());
  int32_t* res = out.data() + h * w;
  for (const uint32_t row : res_rows)
    for (size_t i = 0; i < explicit_blocks; ++i, ++res)
      if (const char* e = reader.symbol(t, row, *res)) return e;
  return reader.finish();
}

PyObject* py_decode_motion(PyObject*, PyObject* args) {
  PyObject *d, *rr, *c, *l, *o;
  Py_ssize_t h, w;
  int compact = 0;
  if (!PyArg_ParseTuple(args, "OnnOOOO|p:decode_motion", &d, &h, &w, &rr, &c, &l, &o, &compact)) return nullptr;
  if (h < 1 || w < 1 || h > (1 << 16) || w > (1 << 16)) {
    PyErr_SetString(PyExc_ValueError, "field dimensions must be in [1, 65536]");
    return nullptr;
  }
  Buffer data, rows;
  TableBuffers tb;
  if (!data.get(d, PyBUF_SIMPLE) || !rows.get_int32(rr, 1, "res_rows") || !tb.get(c, l, o)) return nullptr;
  std::vector<uint32_t> res_rows(rows.i32(), rows.i32() + rows.size());
  Tables t;
  std::vector<int32_t> out;
  std::string error;
  Py_BEGIN_ALLOW_THREADS
  try {
    error = tb.build(t);
    if (error.empty())
      error = decode_motion(t, static_cast<const uint8_t*>(data.view.buf), static_cast<size_t>(data.view.len),
                            static_cast<size_t>(h), static_cast<size_t>(w), res_rows, out, compact);
  } catch (...) {
    error = "out of memory";
  }
  Py_END_ALLOW_THREADS
  if (!error.empty()) {
    PyErr_SetString(PyExc_ValueError, error.c_str());
    return nullptr;
  }
  PyObject* arr = new_int32_array(out.size());
  Buffer view;
  if (!arr) return nullptr;
  if (!view.get(arr, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)) {
    Py_DECREF(arr);
    return nullptr;
  }
  std::memcpy(view.view.buf, out.data(), out.size() * sizeof(int32_t));
  return arr;
}

PyMethodDef methods[] = {
    {"encode", py_encode, METH_VARARGS,
     "encode(symbols, indexes, cdfs, lengths, offsets) -> bytes\n\n"
     "Code int32 symbols with per-symbol CDF rows (int32 1-D arrays of equal length); cdfs is a\n"
     "padded int32 2-D array, lengths and offsets int32 1-D arrays, one entry per row."},
    {"decode", py_decode, METH_VARARGS,
     "decode(data, indexes, cdfs, lengths, offsets) -> numpy.ndarray[int32]"},
    {"encode_many", py_encode_many, METH_VARARGS,
     "encode_many(symbols_list, indexes_list, cdfs, lengths, offsets, threads=1) -> list[bytes]\n\n"
     "Independent substreams, coded on up to `threads` threads."},
    {"decode_many", py_decode_many, METH_VARARGS,
     "decode_many(data_list, indexes_list, cdfs, lengths, offsets, threads=1) -> list[numpy.ndarray]"},
    {"scale_indexes", py_scale_indexes, METH_VARARGS,
     "scale_indexes(values, boundaries) -> numpy.ndarray[int32]\n\n"
     "#{j : boundaries[j] < v} for each float32 value (torch.bucketize, right=False; NaN -> len)."},
    {"motion_field", py_motion_field, METH_VARARGS,
     "motion_field(modes, residuals) -> numpy.ndarray[int32] (2*H*W,)\n\n"
     "The motion field of merge modes (H, W) and explicit residuals (N, 2), int32 (entropy/motion.py)."},
    {"decode_motion", py_decode_motion, METH_VARARGS,
     "decode_motion(data, h, w, res_rows, cdfs, lengths, offsets) -> numpy.ndarray[int32]\n\n"
     "A motion stream's symbols: h*w merge modes, each with the CDF row of its left and top\n"
     "neighbours' classes, then per row of res_rows one residual per EXPLICIT block."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "nvc.entropy._rans",
                      "rANS coder byte-compatible with CompressAI's RansEncoder/RansDecoder "
                      "(see entropy/rans.cpp for the format).",
                      -1, methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__rans() { return PyModule_Create(&module); }
