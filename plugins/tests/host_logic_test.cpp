/*
 * CPU unit test of the PuMer plugins' host-side logic (pumerHostLogic.h): attribute parsing and validation,
 * shape validation, output-shape arithmetic, workspace layout and the serialisation round trip.
 * Plain C++17, no CUDA, no TensorRT. Exit status 0 when every check passes.
 *
 *   g++ -std=c++17 -I plugins/common plugins/tests/host_logic_test.cpp plugins/common/pumerHostLogic.cpp \
 *       plugins/common/pumerVersion.cpp plugins/common/pumerRegistration.cpp -o host_logic_test && ./host_logic_test
 */
#include "pumerHostLogic.h"
#include "pumerRegistration.h"

#include <cstdint>
#include <map>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace pumer;

namespace
{
int gChecks = 0;
int gFailures = 0;

void check(bool cond, char const* expr, char const* file, int line)
{
    ++gChecks;
    if (!cond)
    {
        ++gFailures;
        std::printf("FAIL %s:%d: %s\n", file, line, expr);
    }
}
#define CHECK(cond) check(static_cast<bool>(cond), #cond, __FILE__, __LINE__)
#define CHECK_EQ(a, b) check((a) == (b), #a " == " #b, __FILE__, __LINE__)

bool contains(std::string const& s, char const* part)
{
    return s.find(part) != std::string::npos;
}

constexpr int32_t kI32 = static_cast<int32_t>(FieldType::kINT32);
constexpr int32_t kI64 = static_cast<int32_t>(FieldType::kINT64);
constexpr int32_t kChr = static_cast<int32_t>(FieldType::kCHAR);

bool sameShape(Shape const& s, std::vector<int64_t> const& d)
{
    if (s.nbDims != static_cast<int32_t>(d.size()))
    {
        return false;
    }
    for (size_t i = 0; i < d.size(); ++i)
    {
        if (s.d[i] != d[i])
        {
            return false;
        }
    }
    return true;
}

void testPruneParsing()
{
    int32_t textLen = 40, keep = 72, head = -1, start = 40, masking = 1;
    char const ns[] = "pumer";
    char const ver[] = "2";
    std::vector<FieldView> f = {{"text_len", &textLen, kI32, 1}, {"keep", &keep, kI32, 1},
        {"score_head", &head, kI32, 1}, {"image_start", &start, kI32, 1}, {"masking", &masking, kI32, 1},
        {"plugin_namespace", ns, kChr, 5}, {"plugin_version", ver, kChr, 1}};
    PruneAttrs a;
    Status s = parsePruneFields(f.data(), static_cast<int32_t>(f.size()), a);
    CHECK(s.ok);
    CHECK_EQ(a.textLen, 40);
    CHECK_EQ(a.keep, 72);
    CHECK_EQ(a.scoreHead, -1);
    CHECK_EQ(a.imageStart, 40);
    CHECK_EQ(a.masking, 1);

    // int64 fields are accepted too; score_head defaults to -1, masking to 0 (standard).
    int64_t textLen64 = 8, keep64 = 3, start64 = 0;
    std::vector<FieldView> f64 = {{"keep", &keep64, kI64, 1}, {"text_len", &textLen64, kI64, 1},
        {"image_start", &start64, kI64, 1}};
    PruneAttrs b;
    CHECK(parsePruneFields(f64.data(), 3, b).ok);
    CHECK_EQ(b.textLen, 8);
    CHECK_EQ(b.keep, 3);
    CHECK_EQ(b.scoreHead, -1);
    CHECK_EQ(b.imageStart, 0);
    CHECK_EQ(b.masking, 0);

    // Missing, unknown, wrong type, wrong length, out of range.
    s = parsePruneFields(f.data() + 1, 4, b);
    CHECK(!s.ok && contains(s.message, "text_len"));
    s = parsePruneFields(f.data(), 3, b);
    CHECK(!s.ok && contains(s.message, "image_start"));
    int32_t other = 1;
    std::vector<FieldView> unknown = f;
    unknown.push_back({"ratio", &other, kI32, 1});
    s = parsePruneFields(unknown.data(), static_cast<int32_t>(unknown.size()), b);
    CHECK(!s.ok && contains(s.message, "unknown attribute 'ratio'"));
    float fl = 1.0f;
    std::vector<FieldView> wrongType = {{"text_len", &fl, 1 /* kFLOAT32 */, 1}, {"keep", &keep, kI32, 1},
        {"image_start", &start, kI32, 1}};
    s = parsePruneFields(wrongType.data(), 3, b);
    CHECK(!s.ok && contains(s.message, "integer"));
    int32_t two[2] = {1, 2};
    std::vector<FieldView> wrongLen = {{"text_len", two, kI32, 2}, {"keep", &keep, kI32, 1},
        {"image_start", &start, kI32, 1}};
    s = parsePruneFields(wrongLen.data(), 3, b);
    CHECK(!s.ok && contains(s.message, "single integer"));
    int64_t huge = int64_t{1} << 40;
    std::vector<FieldView> tooBig = {{"text_len", &huge, kI64, 1}, {"keep", &keep, kI32, 1},
        {"image_start", &start, kI32, 1}};
    s = parsePruneFields(tooBig.data(), 3, b);
    CHECK(!s.ok && contains(s.message, "int32"));
    int32_t zero = 0, badHead = -2, badMasking = 2, negative = -1;
    std::vector<FieldView> zeroKeep = {{"text_len", &textLen, kI32, 1}, {"keep", &zero, kI32, 1},
        {"image_start", &start, kI32, 1}};
    s = parsePruneFields(zeroKeep.data(), 3, b);
    CHECK(!s.ok && contains(s.message, "keep must be >= 1"));
    std::vector<FieldView> zeroText = {{"text_len", &zero, kI32, 1}, {"keep", &keep, kI32, 1},
        {"image_start", &start, kI32, 1}};
    CHECK(!parsePruneFields(zeroText.data(), 3, b).ok);
    std::vector<FieldView> headBad = {{"text_len", &textLen, kI32, 1}, {"keep", &keep, kI32, 1},
        {"image_start", &start, kI32, 1}, {"score_head", &badHead, kI32, 1}};
    s = parsePruneFields(headBad.data(), 4, b);
    CHECK(!s.ok && contains(s.message, "score_head"));
    std::vector<FieldView> maskingBad = {{"text_len", &textLen, kI32, 1}, {"keep", &keep, kI32, 1},
        {"image_start", &start, kI32, 1}, {"masking", &badMasking, kI32, 1}};
    s = parsePruneFields(maskingBad.data(), 4, b);
    CHECK(!s.ok && contains(s.message, "masking must be 0"));
    std::vector<FieldView> startBad = {{"text_len", &textLen, kI32, 1}, {"keep", &keep, kI32, 1},
        {"image_start", &negative, kI32, 1}};
    s = parsePruneFields(startBad.data(), 3, b);
    CHECK(!s.ok && contains(s.message, "image_start must be >= 0"));
    CHECK(!parsePruneFields(nullptr, 0, b).ok);
}

void testMergeParsing()
{
    int32_t r = 36;
    char const ns[] = "pumer";
    std::vector<FieldView> f = {{"r", &r, kI32, 1}, {"plugin_namespace", ns, kChr, 5}};
    MergeAttrs a;
    CHECK(parseMergeFields(f.data(), 2, a).ok);
    CHECK_EQ(a.r, 36);
    int32_t zero = 0, neg = -1;
    std::vector<FieldView> z = {{"r", &zero, kI32, 1}};
    CHECK(parseMergeFields(z.data(), 1, a).ok);
    CHECK_EQ(a.r, 0);
    std::vector<FieldView> n = {{"r", &neg, kI32, 1}};
    Status s = parseMergeFields(n.data(), 1, a);
    CHECK(!s.ok && contains(s.message, "r must be >= 0"));
    CHECK_EQ(a.r, 0); // unchanged on failure
    s = parseMergeFields(f.data() + 1, 1, a);
    CHECK(!s.ok && contains(s.message, "missing required attribute 'r'"));
    std::vector<FieldView> u = {{"r", &r, kI32, 1}, {"keep", &r, kI32, 1}};
    CHECK(!parseMergeFields(u.data(), 2, a).ok);
}

void testSerialisationRoundTrip()
{
    PruneAttrs p{40, 100, 3, 40, 1};
    std::vector<FieldView> fp = pruneFieldsToSerialize(p);
    CHECK_EQ(fp.size(), size_t{5});
    for (FieldView const& v : fp)
    {
        CHECK_EQ(v.type, kI32);
        CHECK_EQ(v.length, 1);
    }
    PruneAttrs p2;
    CHECK(parsePruneFields(fp.data(), static_cast<int32_t>(fp.size()), p2).ok);
    CHECK(p2.textLen == 40 && p2.keep == 100 && p2.scoreHead == 3 && p2.imageStart == 40 && p2.masking == 1);

    MergeAttrs m{17};
    std::vector<FieldView> fm = mergeFieldsToSerialize(m);
    CHECK_EQ(fm.size(), size_t{1});
    CHECK(std::strcmp(fm[0].name, "r") == 0);
    MergeAttrs m2;
    CHECK(parseMergeFields(fm.data(), 1, m2).ok);
    CHECK_EQ(m2.r, 17);
}

void testPruneShapes()
{
    PruneAttrs a{40, 72, -1, 40, 0};
    Shape x = makeShape({8, 185, 768}), metric = makeShape({8, 185, 64}), q = makeShape({8, 12, 40, 64}),
          k = makeShape({8, 12, 185, 64}), km = makeShape({8, 185}), mask = makeShape({8, 40});
    CHECK(validatePruneShapes(a, x, metric, q, k, km, mask).ok);
    // Wildcards are accepted.
    CHECK(validatePruneShapes(a, makeShape({-1, 185, 768}), makeShape({-1, 185, 64}), makeShape({-1, 12, 40, 64}),
        makeShape({-1, 12, 185, 64}), makeShape({-1, 185}), makeShape({-1, 40}))
              .ok);
    CHECK(validatePruneShapes(a, makeShape({-1, -1, 768}), makeShape({-1, -1, 64}), makeShape({-1, 12, 40, 64}),
        makeShape({-1, 12, -1, 64}), makeShape({-1, -1}), makeShape({-1, 40}))
              .ok);
    Status s = validatePruneShapes(a, makeShape({8, 185}), metric, q, k, km, mask);
    CHECK(!s.ok && contains(s.message, "rank 3"));
    s = validatePruneShapes(a, x, metric, q, k, km, makeShape({8, 39}));
    CHECK(!s.ok && contains(s.message, "text_len"));
    s = validatePruneShapes(a, x, metric, makeShape({8, 12, 39, 64}), k, km, mask);
    CHECK(!s.ok && contains(s.message, "text_len"));
    s = validatePruneShapes(a, x, metric, q, makeShape({4, 12, 185, 64}), km, mask);
    CHECK(!s.ok && contains(s.message, "batch"));
    s = validatePruneShapes(a, x, metric, q, makeShape({8, 12, 186, 64}), km, mask);
    CHECK(!s.ok && contains(s.message, "key counts"));
    s = validatePruneShapes(a, x, metric, q, makeShape({8, 12, 185, 32}), km, mask);
    CHECK(!s.ok && contains(s.message, "head size"));
    PruneAttrs tooMany{40, 146, -1, 40, 0};
    s = validatePruneShapes(tooMany, x, metric, q, k, km, mask);
    CHECK(!s.ok && contains(s.message, "exceeds the 145 image tokens"));
    PruneAttrs all{40, 145, -1, 40, 0};
    CHECK(validatePruneShapes(all, x, metric, q, k, km, mask).ok);
    PruneAttrs head{40, 72, 12, 40, 0};
    s = validatePruneShapes(head, x, metric, q, k, km, mask);
    CHECK(!s.ok && contains(s.message, "12 heads"));
    PruneAttrs head11{40, 72, 11, 40, 0};
    CHECK(validatePruneShapes(head11, x, metric, q, k, km, mask).ok);
    // A cross-attention: the keys are the image tokens only (image_start 0).
    PruneAttrs cross{40, 145, -1, 0, 1};
    Shape ximg = makeShape({8, 145, 768}), kimg = makeShape({8, 12, 145, 64});
    CHECK(validatePruneShapes(cross, ximg, makeShape({8, 145, 64}), q, kimg, makeShape({8, 145}), mask).ok);
    PruneAttrs crossTooFew{40, 30, -1, 0, 1};
    s = validatePruneShapes(crossTooFew, makeShape({8, 20, 768}), makeShape({8, 20, 64}), q,
        makeShape({8, 12, 20, 64}), makeShape({8, 20}), mask);
    CHECK(!s.ok && contains(s.message, "exceeds the 20 image tokens"));

    Shape out[3];
    pruneOutputShapes(a, x, metric, out);
    CHECK(sameShape(out[0], {8, 72, 768}));
    CHECK(sameShape(out[1], {8, 72, 64}));
    CHECK(sameShape(out[2], {8, 72}));
    pruneOutputShapes(a, makeShape({-1, -1, 768}), makeShape({-1, -1, 64}), out);
    CHECK(sameShape(out[0], {-1, 72, 768}));
    CHECK(sameShape(out[2], {-1, 72}));
}

void testMergeShapes()
{
    CHECK_EQ(mergeMaxR(0), 0);
    CHECK_EQ(mergeMaxR(1), 0);
    CHECK_EQ(mergeMaxR(2), 0);
    CHECK_EQ(mergeMaxR(3), 1);
    CHECK_EQ(mergeMaxR(4), 1);
    CHECK_EQ(mergeMaxR(145), 72);
    CHECK_EQ(mergeMaxR(146), 72);

    MergeAttrs a{36};
    Shape x = makeShape({2, 145, 768}), metric = makeShape({2, 145, 64}), mask = makeShape({2, 145});
    CHECK(validateMergeShapes(a, x, metric, mask).ok);
    CHECK(validateMergeShapes(MergeAttrs{72}, x, metric, mask).ok);
    Status s = validateMergeShapes(MergeAttrs{73}, x, metric, mask);
    CHECK(!s.ok && contains(s.message, "(t - 1) // 2 = 72"));
    CHECK(validateMergeShapes(MergeAttrs{0}, makeShape({1, 1, 4}), makeShape({1, 1, 4}), makeShape({1, 1})).ok);
    CHECK(!validateMergeShapes(MergeAttrs{1}, makeShape({1, 2, 4}), makeShape({1, 2, 4}), makeShape({1, 2})).ok);
    s = validateMergeShapes(a, x, metric, makeShape({2, 144}));
    CHECK(!s.ok && contains(s.message, "token counts"));
    s = validateMergeShapes(a, x, makeShape({3, 145, 64}), mask);
    CHECK(!s.ok && contains(s.message, "batch"));
    s = validateMergeShapes(a, x, metric, makeShape({2, 145, 1}));
    CHECK(!s.ok && contains(s.message, "rank 2"));
    CHECK(validateMergeShapes(a, makeShape({-1, -1, 768}), makeShape({-1, -1, 64}), makeShape({-1, -1})).ok);

    Shape out[3];
    mergeOutputShapes(a, x, out);
    CHECK(sameShape(out[0], {2, 109, 768}));
    CHECK(sameShape(out[1], {2, 109}));
    CHECK(sameShape(out[2], {2, 145}));
    mergeOutputShapes(a, makeShape({-1, -1, 768}), out);
    CHECK(sameShape(out[0], {-1, -1, 768}));
    CHECK(sameShape(out[2], {-1, -1}));
}

void testWorkspace()
{
    CHECK_EQ(alignUp(0), size_t{0});
    CHECK_EQ(alignUp(1), size_t{256});
    CHECK_EQ(alignUp(256), size_t{256});
    CHECK_EQ(alignUp(257), size_t{512});
    CHECK_EQ(nextPow2(1), 1);
    CHECK_EQ(nextPow2(145), 256);
    CHECK_EQ(nextPow2(4096), 4096);
    CHECK_EQ(nextPow2(4097), 8192);

    PruneWorkspace p = pruneWorkspaceLayout(64, 12, 40, 185, 40);
    CHECK_EQ(p.rowStats, size_t{0});
    CHECK_EQ(p.scores, alignUp(64 * 12 * 40 * 2 * 4));
    CHECK_EQ(p.total, p.scores + alignUp(64 * 145 * 4));
    CHECK_EQ(pruneWorkspaceLayout(2, 4, 5, 20, 0).total, alignUp(2 * 4 * 5 * 2 * 4) + alignUp(2 * 20 * 4));
    CHECK_EQ(pruneWorkspaceLayout(0, 12, 40, 185, 40).total, size_t{0});
    CHECK(pruneWorkspaceLayout(64, 12, 40, 185, 40).total >= pruneWorkspaceLayout(1, 12, 40, 100, 40).total);

    int64_t const b = 3, t = 145, d = 64, na = 73, nb = 72;
    MergeWorkspace m = mergeWorkspaceLayout(b, t, d);
    size_t const offsets[] = {m.nodeMax, m.nodeIdx, m.order, m.rank, m.dstByRank, m.unmList, m.srcList, m.count,
        m.offset, m.total};
    size_t const sizes[] = {size_t(b * na * 4), size_t(b * na * 4), size_t(b * na * 4), size_t(b * na * 4),
        size_t(b * na * 4), size_t(b * na * 4), size_t(b * na * 4), size_t(b * nb * 4), size_t(b * nb * 4)};
    CHECK_EQ(m.nodeMax, size_t{0});
    CHECK_EQ(m.total, mergeWorkspaceLayout(b, t, 4 * d).total); // the metric is normalised in shared memory
    for (int i = 0; i < 9; ++i)
    {
        CHECK_EQ(offsets[i] % kWorkspaceAlign, size_t{0});
        CHECK(offsets[i + 1] >= offsets[i] + sizes[i]); // no overlap, in order
        CHECK(offsets[i + 1] - offsets[i] < sizes[i] + kWorkspaceAlign);
    }
    // A bigger problem never needs less (TensorRT sizes the workspace for the profile's maximum).
    CHECK(mergeWorkspaceLayout(64, 250, 64).total >= mergeWorkspaceLayout(8, 145, 64).total);
    CHECK(mergeWorkspaceLayout(1, 1, 64).total > 0);
    CHECK_EQ(mergeWorkspaceLayout(0, 145, 64).total, size_t{0});
}

void testIdentity()
{
    CHECK(std::strcmp(kPluginNamespace, "pumer") == 0);
    CHECK(std::strcmp(kPluginVersion, "2") == 0);
    CHECK(std::strcmp(kPruneName, "PumerPrune") == 0);
    CHECK(std::strcmp(kMergeName, "PumerMerge") == 0);
    CHECK_EQ(dtypeSize(DType::kFLOAT), size_t{4});
    CHECK_EQ(dtypeSize(DType::kHALF), size_t{2});
    CHECK_EQ(dtypeSize(DType::kBF16), size_t{2});
    CHECK(std::strcmp(dtypeName(DType::kBF16), "bfloat16") == 0);
    CHECK_EQ(std::strlen(opSpecSha256()), size_t{64});
#ifdef PUMER_EXPECTED_SHA256
    CHECK(std::strcmp(opSpecSha256(), PUMER_EXPECTED_SHA256) == 0);
#endif
}


//! A plugin registry shared by several copies of the library: key = creator position (same name, version and
//! namespace in every copy), value = the copy whose creator object is registered.
struct FakeRegistry
{
    std::map<int32_t, int32_t> owner;
    bool refuse{false};
};

//! RegistryOps as one copy of the library sees the registry.
class CopyView final : public RegistryOps
{
public:
    CopyView(FakeRegistry& r, int32_t copy)
        : mR(r)
        , mCopy(copy)
    {
    }
    bool contains(int32_t i) override
    {
        return mR.owner.count(i) != 0;
    }
    bool add(int32_t i) override
    {
        if (mR.refuse || mR.owner.count(i) != 0)
        {
            return false;
        }
        mR.owner[i] = mCopy;
        return true;
    }
    bool remove(int32_t i) override
    {
        auto it = mR.owner.find(i);
        if (it == mR.owner.end() || it->second != mCopy)
        {
            return false; // TensorRT deregisters by object: another copy's creator is not found
        }
        mR.owner.erase(it);
        return true;
    }

private:
    FakeRegistry& mR;
    int32_t mCopy;
};

void testRegistration()
{
    // 1. The application loads the library (copy 1), then TensorRT loads an engine's serialised copy (copy 2).
    {
        FakeRegistry reg;
        CopyView app(reg, 1);
        CopyView engine(reg, 2);
        CreatorRegistrar first(2);
        CreatorRegistrar second(2);
        first.registerAll(app);
        CHECK(first.registeredHere(0) && first.registeredHere(1));
        second.registerAll(engine); // already there: registers nothing ("already registered" avoided)
        CHECK(!second.registeredHere(0) && !second.registeredHere(1));
        CHECK(second.pending(engine).empty()); // loadLibrary gets no duplicate creators
        CHECK(first.pending(app).empty());
        second.deregisterAll(engine); // the copy unloads: the application's creators stay registered
        CHECK_EQ(reg.owner.size(), 2u);
        CHECK(reg.owner[0] == 1 && reg.owner[1] == 1);
        first.deregisterAll(app); // the application unloads: nothing dangles
        CHECK(reg.owner.empty());
    }
    // 2. The engine's copy registers first; when it unloads, no pointer into it stays in the registry.
    {
        FakeRegistry reg;
        CopyView engine(reg, 2);
        CreatorRegistrar copy(2);
        copy.registerAll(engine);
        CHECK(reg.owner[0] == 2 && reg.owner[1] == 2);
        copy.deregisterAll(engine);
        CHECK(reg.owner.empty());
        CHECK(!copy.registeredHere(0));
        CHECK_EQ(copy.pending(engine).size(), 2u); // a later loadLibrary may register them again
    }
    // 3. The registry refuses (or static registration is compiled out): getCreators hands out both, once.
    {
        FakeRegistry reg;
        reg.refuse = true;
        CopyView view(reg, 1);
        CreatorRegistrar copy(2);
        copy.registerAll(view);
        CHECK(!copy.registeredHere(0) && !copy.registeredHere(1));
        std::vector<int32_t> const pending = copy.pending(view);
        CHECK(pending.size() == 2u && pending[0] == 0 && pending[1] == 1);
        reg.refuse = false;
        for (int32_t i : pending)
        {
            CHECK(view.add(i)); // what loadLibrary does with them
        }
        CHECK(copy.pending(view).empty());
        copy.deregisterAll(view); // not ours: loadLibrary's handle owns them
        CHECK_EQ(reg.owner.size(), 2u);
    }
}

void testBatchLimit()
{
    PruneAttrs pa{4, 3, -1, 4, 0};
    Status s = validatePruneShapes(pa, makeShape({kMaxBatch, 10, 8}), makeShape({kMaxBatch, 10, 4}),
        makeShape({kMaxBatch, 2, 4, 8}), makeShape({kMaxBatch, 2, 10, 8}), makeShape({kMaxBatch, 10}),
        makeShape({kMaxBatch, 4}));
    CHECK(s.ok);
    int64_t const over = kMaxBatch + 1;
    s = validatePruneShapes(pa, makeShape({over, 10, 8}), makeShape({over, 10, 4}), makeShape({over, 2, 4, 8}),
        makeShape({over, 2, 10, 8}), makeShape({over, 10}), makeShape({over, 4}));
    CHECK(!s.ok && contains(s.message, "65535") && contains(s.message, "maximum batch"));
    MergeAttrs ma;
    ma.r = 2;
    s = validateMergeShapes(ma, makeShape({70000, 9, 8}), makeShape({-1, 9, 4}), makeShape({-1, 9}));
    CHECK(!s.ok && contains(s.message, "PumerMerge") && contains(s.message, "65535"));
    s = validateMergeShapes(ma, makeShape({-1, 9, 8}), makeShape({-1, 9, 4}), makeShape({-1, 9}));
    CHECK(s.ok); // a wildcard batch is checked again with the profile's maximum
}

} // namespace

void testCompact()
{
    char const ns[] = "pumer";
    int32_t r = 1;
    CompactAttrs a;
    std::vector<FieldView> f = {{"plugin_namespace", ns, kChr, 5}};
    CHECK(parseCompactFields(f.data(), 1, a).ok);
    CHECK(parseCompactFields(nullptr, 0, a).ok);
    std::vector<FieldView> u = {{"r", &r, kI32, 1}};
    Status s = parseCompactFields(u.data(), 1, a);
    CHECK(!s.ok && contains(s.message, "unknown attribute 'r'"));
    CHECK(validateCompactShapes(makeShape({2, 65}), makeShape({2, 65, 128})).ok);
    CHECK(validateCompactShapes(makeShape({-1, -1}), makeShape({-1, 65, 128})).ok); // build time: wildcards
    s = validateCompactShapes(makeShape({2, 64}), makeShape({2, 65, 128}));
    CHECK(!s.ok && contains(s.message, "does not match"));
    CHECK(!validateCompactShapes(makeShape({2, 65, 1}), makeShape({2, 65, 128})).ok);
    CHECK(!validateCompactShapes(makeShape({70000, 5}), makeShape({70000, 5, 8})).ok); // the grid's y limit
    CompactWorkspace const w = compactWorkspaceLayout(3, 100);
    CHECK(w.counts >= 3 * 100 * sizeof(int32_t) && w.nMax >= w.counts + 3 * sizeof(int32_t));
    CHECK(w.total >= w.nMax + sizeof(int32_t) && w.counts % kWorkspaceAlign == 0 && w.nMax % kWorkspaceAlign == 0);
    CHECK_EQ(compactWorkspaceLayout(0, 0).total, alignUp(sizeof(int32_t)));
}

int main()
{
    testPruneParsing();
    testMergeParsing();
    testSerialisationRoundTrip();
    testPruneShapes();
    testMergeShapes();
    testWorkspace();
    testIdentity();
    testRegistration();
    testBatchLimit();
    testCompact();
    std::printf("%d checks, %d failures\n", gChecks, gFailures);
    return gFailures == 0 ? 0 : 1;
}
