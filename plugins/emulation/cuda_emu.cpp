/*
 * cuda_emu.cpp: the scheduler behind cuda_emu.h (fibers, barriers, warp collectives, shared memory, errors).
 *
 * One launch runs its blocks one after another. A block's threads are fibers (ucontext) with their own stacks; the
 * scheduler resumes the ready fibers in the order of the policy and each runs until it waits (block barrier, warp
 * collective), hands over (an atomic in random mode) or exits. When no fiber is ready, a complete warp collective
 * or the block barrier is released; when neither can be, the block is deadlocked and the launch fails.
 */
#include "cuda_emu.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define CUEMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUEMU_ASAN 1
#endif
#endif

#ifdef CUEMU_ASAN
extern "C" void __sanitizer_start_switch_fiber(void** fakeStackSave, void const* bottom, size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void* fakeStackSave, void const** bottomOld, size_t* sizeOld);
#endif

namespace cuemu
{
namespace
{

#ifdef CUEMU_ASAN
constexpr size_t kStackBytes = 512 * 1024;
#else
constexpr size_t kStackBytes = 128 * 1024;
#endif
constexpr size_t kMaxSharedBytes = 48 * 1024; // without cudaFuncSetAttribute opt-in
constexpr int kWarp = 32;

enum class State
{
    kReady,
    kBlockWait,
    kWarpWait,
    kDone,
};

struct Fiber
{
    ThreadContext ctx{};
    ucontext_t uc{};
    char* stack{nullptr}; //!< usable stack (above a guard page)
    State state{State::kReady};
    int collKind{0};
    unsigned collMask{0};
    uint64_t collIn{0};
    int collSrc{-1};
    uint64_t collOut{0};
    void* fakeStack{nullptr};
};

struct Emulator
{
    Policy policy{Policy::kForward};
    uint64_t seed{0};
    std::mt19937_64 rng{0};
    std::string fault;
    cudaError_t lastError{cudaSuccess};
    Stats stats;

    // the block being run
    std::vector<Fiber> fibers;
    std::vector<char*> stackPool; //!< mmap'd regions (guard page + stack), reused across blocks and launches
    Fiber* running{nullptr};
    ucontext_t schedulerContext{};
    void* schedulerFakeStack{nullptr};
    void const* schedulerStackBottom{nullptr};
    size_t schedulerStackSize{0};
    detail::Body body{nullptr};
    void* closure{nullptr};
    std::map<void const*, void*> shared;
    size_t sharedBytes{0};
    void* dynShared{nullptr};
    bool aborted{false};
    uint64_t blockSeed{0};
};

Emulator& emu()
{
    static Emulator e;
    return e;
}

ThreadContext const gHostContext{};

void setFault(std::string const& message)
{
    Emulator& e = emu();
    if (e.fault.empty())
    {
        e.fault = message;
    }
    e.aborted = true;
}

//! Deterministic garbage for (seed, block, allocation): fills shared memory and nothing else.
void fillGarbage(void* p, size_t bytes, uint64_t state)
{
    auto* out = static_cast<unsigned char*>(p);
    state = state * 0x9E3779B97F4A7C15ull + 0xD1B54A32D192ED03ull;
    for (size_t i = 0; i < bytes; i += 8)
    {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        size_t const n = std::min<size_t>(8, bytes - i);
        std::memcpy(out + i, &state, n);
    }
}

char* stackFor(size_t index)
{
    Emulator& e = emu();
    long const page = sysconf(_SC_PAGESIZE);
    while (e.stackPool.size() <= index)
    {
        size_t const total = kStackBytes + static_cast<size_t>(page);
        void* region = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED)
        {
            std::fprintf(stderr, "cuda_emu: cannot map a fiber stack\n");
            std::abort();
        }
        mprotect(region, static_cast<size_t>(page), PROT_NONE); // guard page: a stack overflow faults
        e.stackPool.push_back(static_cast<char*>(region) + page);
    }
    return e.stackPool[index];
}

// ---- switching ----------------------------------------------------------------------------------------------------

void enterFiber(Fiber& f)
{
    Emulator& e = emu();
    e.running = &f;
#ifdef CUEMU_ASAN
    __sanitizer_start_switch_fiber(&e.schedulerFakeStack, f.stack, kStackBytes);
#endif
    swapcontext(&e.schedulerContext, &f.uc);
#ifdef CUEMU_ASAN
    __sanitizer_finish_switch_fiber(e.schedulerFakeStack, nullptr, nullptr);
#endif
    e.running = nullptr;
}

//! From a fiber back to the scheduler; returns when the scheduler resumes this fiber.
void leaveFiber()
{
    Emulator& e = emu();
    Fiber* f = e.running;
#ifdef CUEMU_ASAN
    __sanitizer_start_switch_fiber(&f->fakeStack, e.schedulerStackBottom, e.schedulerStackSize);
#endif
    swapcontext(&f->uc, &e.schedulerContext);
#ifdef CUEMU_ASAN
    __sanitizer_finish_switch_fiber(f->fakeStack, nullptr, nullptr);
#endif
}

void fiberEntry()
{
    Emulator& e = emu();
#ifdef CUEMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &e.schedulerStackBottom, &e.schedulerStackSize);
#endif
    e.body(e.closure);
    Fiber* f = e.running;
    f->state = State::kDone;
#ifdef CUEMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, e.schedulerStackBottom, e.schedulerStackSize);
#endif
    setcontext(&e.schedulerContext);
}

// ---- one block ----------------------------------------------------------------------------------------------------

int laneOf(Fiber const& f, Emulator const& e)
{
    return static_cast<int>(&f - e.fibers.data()) % kWarp;
}

//! Release the warp collectives whose lanes have all arrived. Returns true if any was released.
bool releaseWarpCollectives()
{
    Emulator& e = emu();
    bool released = false;
    size_t const n = e.fibers.size();
    for (size_t base = 0; base < n && !e.aborted; base += kWarp)
    {
        size_t const lanes = std::min<size_t>(kWarp, n - base);
        for (size_t l = 0; l < lanes; ++l)
        {
            Fiber& lead = e.fibers[base + l];
            if (lead.state != State::kWarpWait)
            {
                continue;
            }
            unsigned const mask = lead.collMask;
            int const kind = lead.collKind;
            bool complete = true;
            for (size_t m = 0; m < lanes && complete; ++m)
            {
                if (!(mask & (1u << m)))
                {
                    continue;
                }
                Fiber const& other = e.fibers[base + m];
                if (other.state == State::kDone)
                {
                    setFault("warp collective in block (" + std::to_string(lead.ctx.block.x) + ","
                        + std::to_string(lead.ctx.block.y) + ") at lane " + std::to_string(l) + " waits for lane "
                        + std::to_string(m) + ", which has exited");
                    return false;
                }
                if (other.state != State::kWarpWait)
                {
                    complete = false;
                }
                else if (other.collMask != mask || other.collKind != kind)
                {
                    setFault("lanes " + std::to_string(l) + " and " + std::to_string(m)
                        + " of a warp wait at different collectives (or with different masks)");
                    return false;
                }
            }
            if (!complete)
            {
                continue;
            }
            unsigned ballot = 0;
            for (size_t m = 0; m < lanes; ++m)
            {
                if ((mask & (1u << m)) && e.fibers[base + m].collIn != 0)
                {
                    ballot |= 1u << m;
                }
            }
            unsigned const present = lanes == kWarp ? 0xFFFFFFFFu : ((1u << lanes) - 1u);
            for (size_t m = 0; m < lanes; ++m)
            {
                if (!(mask & (1u << m)))
                {
                    continue;
                }
                Fiber& f = e.fibers[base + m];
                switch (kind)
                {
                case detail::kBallot: f.collOut = ballot; break;
                case detail::kAny: f.collOut = ballot != 0; break;
                case detail::kAll: f.collOut = ballot == (mask & present); break;
                case detail::kSyncWarp: f.collOut = 0; break;
                default:
                {
                    int const src = f.collSrc;
                    bool const valid = src >= 0 && static_cast<size_t>(src) < lanes && (mask & (1u << src));
                    // Reading a lane outside the mask is undefined: garbage.
                    f.collOut = valid ? e.fibers[base + static_cast<size_t>(src)].collIn : e.rng();
                }
                }
                f.state = State::kReady;
            }
            ++e.stats.warpCollectives;
            released = true;
        }
    }
    return released;
}

bool releaseBlockBarrier()
{
    Emulator& e = emu();
    bool any = false;
    for (Fiber const& f : e.fibers)
    {
        if (f.state == State::kBlockWait)
        {
            any = true;
        }
        else if (f.state != State::kDone)
        {
            return false;
        }
    }
    if (!any)
    {
        return false;
    }
    for (Fiber& f : e.fibers)
    {
        if (f.state == State::kBlockWait)
        {
            f.state = State::kReady;
        }
    }
    ++e.stats.blockBarriers;
    return true;
}

void runBlock(LaunchConfig const& cfg, uint3 block, uint64_t blockLinear)
{
    Emulator& e = emu();
    size_t const threads = static_cast<size_t>(cfg.block.x) * cfg.block.y * cfg.block.z;
    e.fibers.assign(threads, Fiber{});
    e.blockSeed = e.seed * 0x100000001B3ull + blockLinear;
    e.sharedBytes = cfg.sharedBytes;
    e.dynShared = std::malloc(cfg.sharedBytes > 0 ? cfg.sharedBytes : 1);
    fillGarbage(e.dynShared, cfg.sharedBytes, e.blockSeed);
    for (size_t i = 0; i < threads; ++i)
    {
        Fiber& f = e.fibers[i];
        f.ctx.thread = uint3{static_cast<unsigned>(i % cfg.block.x), static_cast<unsigned>((i / cfg.block.x) % cfg.block.y),
            static_cast<unsigned>(i / (static_cast<size_t>(cfg.block.x) * cfg.block.y))};
        f.ctx.block = block;
        f.ctx.blockSize = cfg.block;
        f.ctx.gridSize = cfg.grid;
        f.stack = stackFor(i);
        getcontext(&f.uc);
        f.uc.uc_stack.ss_sp = f.stack;
        f.uc.uc_stack.ss_size = kStackBytes;
        f.uc.uc_link = nullptr;
        makecontext(&f.uc, fiberEntry, 0);
    }

    std::vector<size_t> order(threads);
    while (!e.aborted)
    {
        order.clear();
        for (size_t i = 0; i < threads; ++i)
        {
            if (e.fibers[i].state == State::kReady)
            {
                order.push_back(i);
            }
        }
        if (order.empty())
        {
            if (std::all_of(e.fibers.begin(), e.fibers.end(), [](Fiber const& f) { return f.state == State::kDone; }))
            {
                break;
            }
            if (releaseWarpCollectives() || e.aborted || releaseBlockBarrier())
            {
                continue;
            }
            size_t atBarrier = 0;
            size_t atWarp = 0;
            for (Fiber const& f : e.fibers)
            {
                atBarrier += f.state == State::kBlockWait;
                atWarp += f.state == State::kWarpWait;
            }
            setFault("deadlock in block (" + std::to_string(block.x) + "," + std::to_string(block.y) + ","
                + std::to_string(block.z) + "): " + std::to_string(atBarrier) + " threads at __syncthreads, "
                + std::to_string(atWarp) + " at a warp collective that cannot complete");
            break;
        }
        if (e.policy == Policy::kReverse)
        {
            std::reverse(order.begin(), order.end());
        }
        else if (e.policy == Policy::kRandom)
        {
            std::shuffle(order.begin(), order.end(), e.rng);
        }
        for (size_t i : order)
        {
            if (e.aborted)
            {
                break;
            }
            if (e.fibers[i].state == State::kReady)
            {
                enterFiber(e.fibers[i]);
            }
        }
    }
    for (auto& kv : e.shared)
    {
        std::free(kv.second);
    }
    e.shared.clear();
    std::free(e.dynShared);
    e.dynShared = nullptr;
    e.fibers.clear();
}

bool validConfig(LaunchConfig const& cfg, std::string& why)
{
    uint64_t const threads = static_cast<uint64_t>(cfg.block.x) * cfg.block.y * cfg.block.z;
    if (cfg.grid.x == 0 || cfg.grid.y == 0 || cfg.grid.z == 0 || threads == 0)
    {
        why = "a grid or block dimension is 0";
        return false;
    }
    if (cfg.grid.x > 0x7FFFFFFFu || cfg.grid.y > 65535 || cfg.grid.z > 65535)
    {
        why = "grid " + std::to_string(cfg.grid.x) + "x" + std::to_string(cfg.grid.y) + "x"
            + std::to_string(cfg.grid.z) + " exceeds the limits (2^31-1, 65535, 65535)";
        return false;
    }
    if (threads > 1024 || cfg.block.x > 1024 || cfg.block.y > 1024 || cfg.block.z > 64)
    {
        why = "block of " + std::to_string(threads) + " threads exceeds 1024 (or a block dimension its limit)";
        return false;
    }
    if (cfg.sharedBytes > kMaxSharedBytes)
    {
        why = "dynamic shared memory " + std::to_string(cfg.sharedBytes) + " bytes exceeds 48 KiB";
        return false;
    }
    return true;
}

} // namespace

void setSchedule(Policy policy, uint64_t seed)
{
    Emulator& e = emu();
    e.policy = policy;
    e.seed = seed;
    e.rng.seed(seed);
}

char const* lastFault()
{
    return emu().fault.c_str();
}

void clearFault()
{
    emu().fault.clear();
}

Stats stats()
{
    return emu().stats;
}

void resetStats()
{
    emu().stats = Stats{};
}

ThreadContext const& current()
{
    Fiber const* f = emu().running;
    return f != nullptr ? f->ctx : gHostContext;
}

namespace detail
{

void runGrid(LaunchConfig const& cfg, Body body, void* closure)
{
    Emulator& e = emu();
    if (e.running != nullptr)
    {
        setFault("kernel launched from device code (dynamic parallelism is not emulated)");
        return;
    }
    std::string why;
    if (!validConfig(cfg, why))
    {
        e.lastError = cudaErrorInvalidConfiguration;
        if (e.fault.empty())
        {
            e.fault = "invalid launch configuration: " + why;
        }
        return;
    }
    ++e.stats.launches;
    e.body = body;
    e.closure = closure;
    e.aborted = false;
    uint64_t const nblocks = static_cast<uint64_t>(cfg.grid.x) * cfg.grid.y * cfg.grid.z;
    std::vector<uint64_t> blocks(nblocks);
    for (uint64_t i = 0; i < nblocks; ++i)
    {
        blocks[i] = i;
    }
    if (e.policy == Policy::kReverse)
    {
        std::reverse(blocks.begin(), blocks.end());
    }
    else if (e.policy == Policy::kRandom)
    {
        std::shuffle(blocks.begin(), blocks.end(), e.rng);
    }
    for (uint64_t linear : blocks)
    {
        uint3 const block{static_cast<unsigned>(linear % cfg.grid.x),
            static_cast<unsigned>((linear / cfg.grid.x) % cfg.grid.y),
            static_cast<unsigned>(linear / (static_cast<uint64_t>(cfg.grid.x) * cfg.grid.y))};
        ++e.stats.blocks;
        runBlock(cfg, block, linear);
        if (e.aborted)
        {
            e.lastError = cudaErrorLaunchFailure;
            break;
        }
    }
    e.aborted = false;
}

void syncthreads()
{
    Emulator& e = emu();
    if (e.running == nullptr)
    {
        return;
    }
    e.running->state = State::kBlockWait;
    leaveFiber();
}

int laneId()
{
    Emulator const& e = emu();
    return e.running != nullptr ? laneOf(*e.running, e) : 0;
}

uint64_t warpCollective(int kind, unsigned mask, uint64_t in, int src, int width)
{
    Emulator& e = emu();
    Fiber* f = e.running;
    if (f == nullptr)
    {
        return in;
    }
    int const lane = laneOf(*f, e);
    if (!(mask & (1u << lane)))
    {
        setFault("lane " + std::to_string(lane) + " calls a warp collective with a mask that excludes it");
        leaveFiber();
        return 0;
    }
    if (width <= 0 || width > kWarp || (width & (width - 1)) != 0)
    {
        setFault("warp shuffle width " + std::to_string(width) + " is not a power of two <= 32");
        leaveFiber();
        return 0;
    }
    f->collKind = kind;
    f->collMask = mask;
    f->collIn = in;
    f->collSrc = src;
    f->state = State::kWarpWait;
    leaveFiber();
    return f->collOut;
}

void maybeYield()
{
    Emulator& e = emu();
    if (e.running == nullptr || e.policy != Policy::kRandom || (e.rng() & 1u) == 0)
    {
        return;
    }
    leaveFiber(); // stays ready: the scheduler resumes it in a later round
}

void* blockShared(void const* site, size_t bytes, size_t align)
{
    Emulator& e = emu();
    auto it = e.shared.find(site);
    if (it != e.shared.end())
    {
        return it->second;
    }
    e.sharedBytes += bytes;
    if (e.sharedBytes > kMaxSharedBytes)
    {
        setFault("static + dynamic shared memory of a block exceeds 48 KiB (" + std::to_string(e.sharedBytes)
            + " bytes)");
    }
    // Exact size (malloc aligns to 16), so AddressSanitizer sees an access past the end of a shared array.
    void* p = align <= 16 ? std::malloc(bytes > 0 ? bytes : 1)
                          : std::aligned_alloc(align, (bytes + align - 1) / align * align);
    fillGarbage(p, bytes, e.blockSeed ^ reinterpret_cast<uintptr_t>(site));
    e.shared.emplace(site, p);
    return p;
}

void* dynamicShared()
{
    return emu().dynShared;
}

} // namespace detail

// ---- 16-bit floats ------------------------------------------------------------------------------------------------

uint16_t floatToHalfBits(float v)
{
    uint32_t const u = __float_as_uint(v);
    uint32_t const sign = (u >> 16) & 0x8000u;
    uint32_t const absu = u & 0x7FFFFFFFu;
    if (absu >= 0x7F800000u) // inf or NaN
    {
        return static_cast<uint16_t>(sign | 0x7C00u | (absu > 0x7F800000u ? 0x0200u | ((absu >> 13) & 0x3FFu) : 0u));
    }
    if (absu >= 0x477FF000u) // >= 65520: rounds to inf
    {
        return static_cast<uint16_t>(sign | 0x7C00u);
    }
    if (absu < 0x38800000u) // below the smallest normal half (2^-14): subnormal or zero
    {
        if (absu < 0x33000000u) // < 2^-25: rounds to zero (2^-25 itself is a tie to even zero)
        {
            return static_cast<uint16_t>(sign);
        }
        uint32_t const exp = absu >> 23;
        uint32_t const mant = (absu & 0x7FFFFFu) | 0x800000u;
        uint32_t const shift = 126u - exp; // value = mant * 2^(exp-150); half subnormal unit = 2^-24
        uint32_t q = mant >> shift;
        uint32_t const rem = mant & ((1u << shift) - 1u);
        uint32_t const halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u)))
        {
            ++q;
        }
        return static_cast<uint16_t>(sign | q);
    }
    uint32_t const rounded = absu + 0xFFFu + ((absu >> 13) & 1u); // round to nearest even at bit 13
    return static_cast<uint16_t>(sign | (((rounded >> 13) - (112u << 10)) & 0x7FFFu));
}

float halfBitsToFloat(uint16_t h)
{
    uint32_t const sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t const exp = (h >> 10) & 0x1Fu;
    uint32_t const mant = h & 0x3FFu;
    if (exp == 0x1Fu)
    {
        return __uint_as_float(sign | 0x7F800000u | (mant << 13));
    }
    if (exp == 0)
    {
        float const v = std::ldexp(static_cast<float>(mant), -24);
        return sign ? -v : v;
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t floatToBf16Bits(float v)
{
    uint32_t const u = __float_as_uint(v);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
    {
        return static_cast<uint16_t>((u >> 16) | 0x0040u); // quiet NaN
    }
    return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

float bf16BitsToFloat(uint16_t h)
{
    return __uint_as_float(static_cast<uint32_t>(h) << 16);
}

} // namespace cuemu

// ---- runtime API --------------------------------------------------------------------------------------------------

cudaError_t cudaGetLastError()
{
    cuemu::Emulator& e = cuemu::emu();
    cudaError_t const err = e.lastError;
    e.lastError = cudaSuccess;
    return err;
}

cudaError_t cudaPeekAtLastError()
{
    return cuemu::emu().lastError;
}

char const* cudaGetErrorName(cudaError_t err)
{
    switch (err)
    {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    }
    return "cudaErrorUnknown";
}

char const* cudaGetErrorString(cudaError_t err)
{
    switch (err)
    {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unknown error";
}

cudaError_t cudaMemcpyAsync(void* dst, void const* src, size_t bytes, cudaMemcpyKind /*kind*/, cudaStream_t /*stream*/)
{
    if (bytes > 0 && (dst == nullptr || src == nullptr))
    {
        return cudaErrorInvalidValue;
    }
    if (bytes > 0)
    {
        std::memmove(dst, src, bytes);
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, void const* src, size_t bytes, cudaMemcpyKind kind)
{
    return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t /*stream*/)
{
    if (bytes > 0 && dst == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    if (bytes > 0)
    {
        std::memset(dst, value, bytes);
    }
    return cudaSuccess;
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes)
{
    return cudaMemsetAsync(dst, value, bytes, nullptr);
}

cudaError_t cudaStreamSynchronize(cudaStream_t /*stream*/)
{
    return cudaPeekAtLastError();
}

cudaError_t cudaDeviceSynchronize()
{
    return cudaPeekAtLastError();
}
