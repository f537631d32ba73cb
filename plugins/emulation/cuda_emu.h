/*
 * cuda_emu.h: run CUDA C++ kernel sources on the CPU (host C++17, g++ or clang++, no nvcc).
 *
 * This is the project's own emulation of the CUDA execution model, made to test the PuMer kernels where no GPU is
 * available (CI). Every thread of a block is a fiber (ucontext) with its own stack; a block's fibers run one at a
 * time under a scheduler whose order is chosen per run (forward, reverse, seeded random), so a missing barrier or a
 * read of memory another thread has not written yet changes the result from one run to the next.
 *
 *   threadIdx / blockIdx / blockDim / gridDim   the current fiber's values (uint3 / dim3)
 *   __syncthreads()                             a real block barrier: a fiber waits until every thread of the block
 *                                               has arrived or exited (exited threads count as arrived, as on Volta+)
 *   __shfl*_sync, __ballot_sync, __any/__all_sync, __syncwarp
 *                                               real warp collectives: every lane named in the mask must arrive at
 *                                               the same collective; values are exchanged when the last one does.
 *                                               A lane that reads from a lane outside the mask gets garbage.
 *   __shared__ / extern __shared__              per-block memory, filled with garbage when the block starts
 *                                               (a build-time rewrite, cu2cpp.py, turns the declarations into calls)
 *   kernel<<<grid, block, smem, stream>>>(...)  rewritten by cu2cpp.py to cuemu::launch(...): the blocks run one
 *                                               after another (order per schedule), synchronously on the host
 *   atomics                                     plain read-modify-write (one fiber runs at a time); in random mode
 *                                               an atomic may also hand over to another thread
 *   __half, __nv_bfloat16                       16-bit storage types; conversions round to nearest even
 *   streams, cudaMemcpyAsync, errors            plain host execution; launch errors are sticky until read with
 *                                               cudaGetLastError (cudaPeekAtLastError leaves them)
 *
 * Emulation faults (deadlock, a warp collective with a lane that exited or a mismatched mask, too much shared
 * memory, a bad launch configuration) end the launch with an error: cudaGetLastError returns
 * cudaErrorLaunchFailure (or cudaErrorInvalidConfiguration) and cuemu::lastFault() says what happened.
 *
 * Device memory is host memory: "device pointers" are ordinary pointers (the harness allocates them at exact size,
 * so AddressSanitizer sees every out-of-bounds access).
 */
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- CUDA keywords ----------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __constant__ static
#define CUDART_INF_F INFINITY

// ---- vector and dimension types ---------------------------------------------------------------------------------
struct uint3
{
    unsigned int x, y, z;
};

struct dim3
{
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx)
        , y(vy)
        , z(vz)
    {
    }
};

struct alignas(16) uint4
{
    unsigned int x, y, z, w;
};
struct alignas(16) int4
{
    int x, y, z, w;
};
struct alignas(16) float4
{
    float x, y, z, w;
};
struct alignas(8) uint2
{
    unsigned int x, y;
};
struct alignas(8) float2
{
    float x, y;
};

// ---- runtime API types ------------------------------------------------------------------------------------------
enum cudaError_t
{
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorLaunchFailure = 719,
};
typedef cudaError_t cudaError;

enum cudaMemcpyKind
{
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

struct CUstream_st;
typedef CUstream_st* cudaStream_t;

namespace cuemu
{

//! Scheduling policy for the threads of a block (and the order of the blocks).
enum class Policy : int
{
    kForward = 0, //!< thread 0 first, each runs until it waits
    kReverse = 1, //!< last thread first
    kRandom = 2,  //!< a seeded random order at every scheduling round; atomics may hand over
};

//! Set the schedule for the following launches; `seed` also chooses the garbage that fills shared memory.
void setSchedule(Policy policy, uint64_t seed);

//! Message of the last emulation fault ("" when none), cleared by clearFault().
char const* lastFault();
void clearFault();

//! Statistics of the launches since the last resetStats() (for the tests' own sanity checks).
struct Stats
{
    uint64_t launches{0};
    uint64_t blocks{0};
    uint64_t blockBarriers{0};
    uint64_t warpCollectives{0};
};
Stats stats();
void resetStats();

struct LaunchConfig
{
    dim3 grid;
    dim3 block;
    size_t sharedBytes;
    cudaStream_t stream;
    LaunchConfig(dim3 g, dim3 b, size_t smem = 0, cudaStream_t s = nullptr)
        : grid(g)
        , block(b)
        , sharedBytes(smem)
        , stream(s)
    {
    }
};

//! Per-fiber execution state (what threadIdx & co. read).
struct ThreadContext
{
    uint3 thread;
    uint3 block;
    dim3 blockSize;
    dim3 gridSize;
};
ThreadContext const& current();

namespace detail
{
//! Type-erased block body: calls the kernel with its (copied) parameters.
using Body = void (*)(void* closure);
void runGrid(LaunchConfig const& cfg, Body body, void* closure);

void syncthreads();
//! Warp collective: `in` is this lane's value, `src` the lane to read from (or -1 for votes); returns the value
//! of the source lane (shuffles) or the vote result. `kind` identifies the collective (all lanes must agree).
uint64_t warpCollective(int kind, unsigned mask, uint64_t in, int src, int width);
void maybeYield();
void* blockShared(void const* site, size_t bytes, size_t align);
void* dynamicShared();
} // namespace detail

template <typename... KArgs, typename... Args>
void launch(LaunchConfig const& cfg, void (*kernel)(KArgs...), Args&&... args)
{
    // Parameters are copied once, by value, like CUDA's kernel parameter buffer.
    using Params = std::tuple<std::decay_t<KArgs>...>;
    struct Closure
    {
        void (*kernel)(KArgs...);
        Params params;
    };
    Closure closure{kernel, Params(std::forward<Args>(args)...)};
    detail::runGrid(
        cfg,
        [](void* c) {
            auto* cl = static_cast<Closure*>(c);
            std::apply(cl->kernel, cl->params);
        },
        &closure);
}

//! `__shared__ T name[...]` -> `T (&name)[...] = cuemu::blockShared<T[...]>(&site)` (one object per block).
template <typename T>
T& blockShared(void const* site)
{
    return *static_cast<T*>(detail::blockShared(site, sizeof(T), alignof(T)));
}

//! `extern __shared__ T name[]` -> `T* name = cuemu::dynamicShared<T>()`.
template <typename T>
T* dynamicShared()
{
    return static_cast<T*>(detail::dynamicShared());
}

} // namespace cuemu

#define threadIdx (::cuemu::current().thread)
#define blockIdx (::cuemu::current().block)
#define blockDim (::cuemu::current().blockSize)
#define gridDim (::cuemu::current().gridSize)
constexpr int warpSize = 32;

inline void __syncthreads()
{
    ::cuemu::detail::syncthreads();
}
inline void __threadfence() {}
inline void __threadfence_block() {}

// ---- warp collectives -------------------------------------------------------------------------------------------
namespace cuemu
{
namespace detail
{
enum CollectiveKind : int
{
    kShfl = 1,
    kShflXor = 2,
    kShflDown = 3,
    kShflUp = 4,
    kBallot = 5,
    kAny = 6,
    kAll = 7,
    kSyncWarp = 8,
};

template <typename T>
uint64_t toBits(T v)
{
    static_assert(sizeof(T) <= 8, "warp shuffles move at most 64 bits");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}
template <typename T>
T fromBits(uint64_t bits)
{
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}
int laneId();
} // namespace detail
} // namespace cuemu

template <typename T>
T __shfl_sync(unsigned mask, T v, int srcLane, int width = warpSize)
{
    using namespace cuemu::detail;
    int const lane = laneId();
    int const base = lane & ~(width - 1);
    return fromBits<T>(warpCollective(kShfl, mask, toBits(v), base + (srcLane & (width - 1)), width));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = warpSize)
{
    using namespace cuemu::detail;
    int const lane = laneId();
    int src = lane ^ laneMask;
    if ((src & ~(width - 1)) != (lane & ~(width - 1)))
    {
        src = lane; // outside the segment: own value
    }
    return fromBits<T>(warpCollective(kShflXor, mask, toBits(v), src, width));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize)
{
    using namespace cuemu::detail;
    int const lane = laneId();
    int const seg = lane & (width - 1);
    int const src = seg + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
    return fromBits<T>(warpCollective(kShflDown, mask, toBits(v), src, width));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize)
{
    using namespace cuemu::detail;
    int const lane = laneId();
    int const seg = lane & (width - 1);
    int const src = seg >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane;
    return fromBits<T>(warpCollective(kShflUp, mask, toBits(v), src, width));
}
inline unsigned __ballot_sync(unsigned mask, int predicate)
{
    return static_cast<unsigned>(cuemu::detail::warpCollective(cuemu::detail::kBallot, mask, predicate != 0, -1, 32));
}
inline int __any_sync(unsigned mask, int predicate)
{
    return static_cast<int>(cuemu::detail::warpCollective(cuemu::detail::kAny, mask, predicate != 0, -1, 32));
}
inline int __all_sync(unsigned mask, int predicate)
{
    return static_cast<int>(cuemu::detail::warpCollective(cuemu::detail::kAll, mask, predicate != 0, -1, 32));
}
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu)
{
    cuemu::detail::warpCollective(cuemu::detail::kSyncWarp, mask, 0, -1, 32);
}

// ---- atomics (one fiber runs at a time: a plain read-modify-write is atomic) -------------------------------------
namespace cuemu
{
namespace detail
{
//! *address = update(*address), returning the old value; in random mode another thread may run on either side.
template <typename T, typename F>
T atomicUpdate(T* address, F update)
{
    maybeYield();
    T const old = *address;
    *address = update(old);
    maybeYield();
    return old;
}
} // namespace detail
} // namespace cuemu

template <typename T>
T atomicAdd(T* address, T val)
{
    return cuemu::detail::atomicUpdate(address, [val](T old) { return old + val; });
}
template <typename T>
T atomicSub(T* address, T val)
{
    return cuemu::detail::atomicUpdate(address, [val](T old) { return old - val; });
}
template <typename T>
T atomicMax(T* address, T val)
{
    return cuemu::detail::atomicUpdate(address, [val](T old) { return old < val ? val : old; });
}
template <typename T>
T atomicMin(T* address, T val)
{
    return cuemu::detail::atomicUpdate(address, [val](T old) { return val < old ? val : old; });
}
template <typename T>
T atomicExch(T* address, T val)
{
    return cuemu::detail::atomicUpdate(address, [val](T) { return val; });
}
template <typename T>
T atomicCAS(T* address, T compare, T val)
{
    return cuemu::detail::atomicUpdate(address, [compare, val](T old) { return old == compare ? val : old; });
}

// ---- bit casts and math -----------------------------------------------------------------------------------------
inline unsigned int __float_as_uint(float v)
{
    unsigned int u;
    std::memcpy(&u, &v, sizeof(u));
    return u;
}
inline float __uint_as_float(unsigned int u)
{
    float v;
    std::memcpy(&v, &u, sizeof(v));
    return v;
}
inline int __float_as_int(float v)
{
    int u;
    std::memcpy(&u, &v, sizeof(u));
    return u;
}
inline float __int_as_float(int u)
{
    float v;
    std::memcpy(&v, &u, sizeof(v));
    return v;
}
inline float rsqrtf(float v)
{
    return 1.0f / std::sqrt(v);
}
inline float __fdividef(float a, float b)
{
    return a / b;
}
inline int __popc(unsigned int v)
{
    return __builtin_popcount(v);
}
inline int __ffs(int v)
{
    return __builtin_ffs(v);
}
inline int __clz(int v)
{
    return v == 0 ? 32 : __builtin_clz(static_cast<unsigned>(v));
}
using std::sqrt;
using ::sqrtf;
using ::expf;
using ::fabsf;
using ::fmaxf;
using ::fminf;

// ---- 16-bit floating point --------------------------------------------------------------------------------------
namespace cuemu
{
//! float -> IEEE binary16 bits, round to nearest even (subnormals, overflow to inf, NaN kept quiet).
uint16_t floatToHalfBits(float v);
float halfBitsToFloat(uint16_t h);
//! float -> bfloat16 bits, round to nearest even (NaN kept quiet).
uint16_t floatToBf16Bits(float v);
float bf16BitsToFloat(uint16_t h);
} // namespace cuemu

struct __half
{
    unsigned short __x;
    __half() = default;
    explicit __half(float v)
        : __x(cuemu::floatToHalfBits(v))
    {
    }
    explicit operator float() const
    {
        return cuemu::halfBitsToFloat(__x);
    }
};
struct __nv_bfloat16
{
    unsigned short __x;
    __nv_bfloat16() = default;
    explicit __nv_bfloat16(float v)
        : __x(cuemu::floatToBf16Bits(v))
    {
    }
    explicit operator float() const
    {
        return cuemu::bf16BitsToFloat(__x);
    }
};
static_assert(sizeof(__half) == 2 && sizeof(__nv_bfloat16) == 2, "16-bit types");
typedef __half half;
typedef __nv_bfloat16 nv_bfloat16;

inline float __half2float(__half h)
{
    return cuemu::halfBitsToFloat(h.__x);
}
inline __half __float2half_rn(float v)
{
    return __half(v);
}
inline __half __float2half(float v)
{
    return __half(v);
}
inline float __bfloat162float(__nv_bfloat16 h)
{
    return cuemu::bf16BitsToFloat(h.__x);
}
inline __nv_bfloat16 __float2bfloat16_rn(float v)
{
    return __nv_bfloat16(v);
}
inline __nv_bfloat16 __float2bfloat16(float v)
{
    return __nv_bfloat16(v);
}
// Arithmetic rounds once to the 16-bit type; the float intermediate is exact enough (p_float >= 2 p + 2).
#define CUEMU_HALF_OPS(T, TO, FROM)                                                                                    \
    inline T operator+(T a, T b) { return FROM(TO(a) + TO(b)); }                                                      \
    inline T operator-(T a, T b) { return FROM(TO(a) - TO(b)); }                                                      \
    inline T operator*(T a, T b) { return FROM(TO(a) * TO(b)); }                                                      \
    inline T operator/(T a, T b) { return FROM(TO(a) / TO(b)); }                                                      \
    inline bool operator==(T a, T b) { return TO(a) == TO(b); }                                                       \
    inline bool operator!=(T a, T b) { return TO(a) != TO(b); }                                                       \
    inline bool operator<(T a, T b) { return TO(a) < TO(b); }                                                         \
    inline bool operator>(T a, T b) { return TO(a) > TO(b); }                                                         \
    inline bool operator<=(T a, T b) { return TO(a) <= TO(b); }                                                       \
    inline bool operator>=(T a, T b) { return TO(a) >= TO(b); }
CUEMU_HALF_OPS(__half, __half2float, __float2half_rn)
CUEMU_HALF_OPS(__nv_bfloat16, __bfloat162float, __float2bfloat16_rn)
#undef CUEMU_HALF_OPS

// ---- runtime API ------------------------------------------------------------------------------------------------
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
char const* cudaGetErrorString(cudaError_t err);
char const* cudaGetErrorName(cudaError_t err);
cudaError_t cudaMemcpyAsync(void* dst, void const* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = nullptr);
cudaError_t cudaMemcpy(void* dst, void const* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();
