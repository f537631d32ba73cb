/*
 * PuMer TensorRT plugins: host-side logic (see pumerHostLogic.h). Plain C++17, no CUDA, no TensorRT.
 */
#include "pumerHostLogic.h"

#include <cstring>
#include <limits>
#include <sstream>

namespace pumer
{

size_t dtypeSize(DType t) noexcept
{
    return t == DType::kFLOAT ? 4 : 2;
}

char const* dtypeName(DType t) noexcept
{
    switch (t)
    {
    case DType::kFLOAT: return "float32";
    case DType::kHALF: return "float16";
    case DType::kBF16: return "bfloat16";
    }
    return "unknown";
}

namespace
{

bool nameIs(FieldView const& f, char const* name)
{
    return f.name != nullptr && std::strcmp(f.name, name) == 0;
}

bool isIgnoredField(FieldView const& f)
{
    return nameIs(f, "plugin_namespace") || nameIs(f, "plugin_version");
}

//! Read one integer field (kINT8/16/32/64, length 1) into an int32 with range checking.
Status readInt(FieldView const& f, char const* op, int32_t& out)
{
    std::ostringstream msg;
    if (f.data == nullptr || f.length != 1)
    {
        msg << op << ": attribute '" << f.name << "' must be a single integer (got length " << f.length << ")";
        return Status::error(msg.str());
    }
    int64_t v = 0;
    switch (static_cast<FieldType>(f.type))
    {
    case FieldType::kINT8: v = *static_cast<int8_t const*>(f.data); break;
    case FieldType::kINT16: v = *static_cast<int16_t const*>(f.data); break;
    case FieldType::kINT32: v = *static_cast<int32_t const*>(f.data); break;
    case FieldType::kINT64: v = *static_cast<int64_t const*>(f.data); break;
    default:
        msg << op << ": attribute '" << f.name << "' must be an integer (kINT32), got field type " << f.type;
        return Status::error(msg.str());
    }
    if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
    {
        msg << op << ": attribute '" << f.name << "' = " << v << " does not fit in int32";
        return Status::error(msg.str());
    }
    out = static_cast<int32_t>(v);
    return Status::success();
}

Status unknownField(FieldView const& f, char const* op, char const* expected)
{
    std::ostringstream msg;
    msg << op << ": unknown attribute '" << (f.name ? f.name : "(null)") << "' (expected " << expected << ")";
    return Status::error(msg.str());
}

} // namespace

Status parsePruneFields(FieldView const* fields, int32_t nbFields, PruneAttrs& out)
{
    PruneAttrs a;
    bool haveImageStart = false;
    bool haveTextLen = false;
    bool haveKeep = false;
    for (int32_t i = 0; i < nbFields; ++i)
    {
        FieldView const& f = fields[i];
        Status s;
        if (nameIs(f, "text_len"))
        {
            s = readInt(f, kPruneName, a.textLen);
            haveTextLen = true;
        }
        else if (nameIs(f, "keep"))
        {
            s = readInt(f, kPruneName, a.keep);
            haveKeep = true;
        }
        else if (nameIs(f, "score_head"))
        {
            s = readInt(f, kPruneName, a.scoreHead);
        }
        else if (nameIs(f, "image_start"))
        {
            s = readInt(f, kPruneName, a.imageStart);
            haveImageStart = true;
        }
        else if (nameIs(f, "masking"))
        {
            s = readInt(f, kPruneName, a.masking);
        }
        else if (!isIgnoredField(f))
        {
            return unknownField(f, kPruneName, "text_len, keep, score_head, image_start, masking");
        }
        if (!s.ok)
        {
            return s;
        }
    }
    if (!haveTextLen || !haveKeep || !haveImageStart)
    {
        return Status::error(std::string(kPruneName) + ": missing required attribute '"
            + (!haveTextLen ? "text_len" : (!haveKeep ? "keep" : "image_start")) + "'");
    }
    Status s = validatePruneAttrs(a);
    if (s.ok)
    {
        out = a;
    }
    return s;
}

Status parseMergeFields(FieldView const* fields, int32_t nbFields, MergeAttrs& out)
{
    MergeAttrs a;
    bool haveR = false;
    for (int32_t i = 0; i < nbFields; ++i)
    {
        FieldView const& f = fields[i];
        if (nameIs(f, "r"))
        {
            Status s = readInt(f, kMergeName, a.r);
            if (!s.ok)
            {
                return s;
            }
            haveR = true;
        }
        else if (!isIgnoredField(f))
        {
            return unknownField(f, kMergeName, "r");
        }
    }
    if (!haveR)
    {
        return Status::error(std::string(kMergeName) + ": missing required attribute 'r'");
    }
    Status s = validateMergeAttrs(a);
    if (s.ok)
    {
        out = a;
    }
    return s;
}

Status validatePruneAttrs(PruneAttrs const& a)
{
    std::ostringstream msg;
    if (a.textLen < 1)
    {
        msg << kPruneName << ": text_len must be >= 1, got " << a.textLen;
    }
    else if (a.keep < 1)
    {
        msg << kPruneName << ": keep must be >= 1, got " << a.keep;
    }
    else if (a.scoreHead < -1)
    {
        msg << kPruneName << ": score_head must be -1 (mean over heads) or a head index >= 0, got " << a.scoreHead;
    }
    else if (a.imageStart < 0)
    {
        msg << kPruneName << ": image_start must be >= 0, got " << a.imageStart;
    }
    else if (a.masking != static_cast<int32_t>(Masking::kSTANDARD) && a.masking != static_cast<int32_t>(Masking::kOFFICIAL))
    {
        msg << kPruneName << ": masking must be 0 (standard) or 1 (official), got " << a.masking;
    }
    else
    {
        return Status::success();
    }
    return Status::error(msg.str());
}

Status validateMergeAttrs(MergeAttrs const& a)
{
    if (a.r < 0)
    {
        return Status::error(std::string(kMergeName) + ": r must be >= 0, got " + std::to_string(a.r));
    }
    return Status::success();
}

std::vector<FieldView> pruneFieldsToSerialize(PruneAttrs const& a)
{
    auto const t = static_cast<int32_t>(FieldType::kINT32);
    return {FieldView{"text_len", &a.textLen, t, 1}, FieldView{"keep", &a.keep, t, 1},
        FieldView{"score_head", &a.scoreHead, t, 1}, FieldView{"image_start", &a.imageStart, t, 1},
        FieldView{"masking", &a.masking, t, 1}};
}

std::vector<FieldView> mergeFieldsToSerialize(MergeAttrs const& a)
{
    return {FieldView{"r", &a.r, static_cast<int32_t>(FieldType::kINT32), 1}};
}

Shape makeShape(std::initializer_list<int64_t> dims)
{
    Shape s;
    for (int64_t d : dims)
    {
        if (s.nbDims < 8)
        {
            s.d[s.nbDims++] = d;
        }
    }
    return s;
}

namespace
{

bool known(int64_t d)
{
    return d >= 0;
}

std::string shapeStr(Shape const& s)
{
    std::ostringstream o;
    o << "[";
    for (int32_t i = 0; i < s.nbDims; ++i)
    {
        o << (i ? ", " : "");
        if (known(s.d[i]))
        {
            o << s.d[i];
        }
        else
        {
            o << "?";
        }
    }
    o << "]";
    return o.str();
}

//! Both known and different.
bool differ(int64_t a, int64_t b)
{
    return known(a) && known(b) && a != b;
}

Status rankError(char const* op, char const* name, int32_t rank, Shape const& s)
{
    std::ostringstream msg;
    msg << op << ": input '" << name << "' must have rank " << rank << ", got shape " << shapeStr(s);
    return Status::error(msg.str());
}

} // namespace

//! The batch dimension of a shape (or of any of the given shapes) above the kernels' limit kMaxBatch.
Status batchLimitError(char const* op, std::initializer_list<Shape const*> shapes)
{
    for (Shape const* s : shapes)
    {
        if (s->nbDims > 0 && known(s->d[0]) && s->d[0] > kMaxBatch)
        {
            std::ostringstream msg;
            msg << op << ": batch " << s->d[0] << " exceeds the kernels' limit of " << kMaxBatch
                << " (the CUDA grid's y dimension); build the engine with a maximum batch <= " << kMaxBatch;
            return Status::error(msg.str());
        }
    }
    return Status::success();
}

Status validatePruneShapes(PruneAttrs const& a, Shape const& x, Shape const& metric, Shape const& queries,
    Shape const& keys, Shape const& keyMask, Shape const& textMask)
{
    if (x.nbDims != 3) return rankError(kPruneName, "x", 3, x);
    if (metric.nbDims != 3) return rankError(kPruneName, "metric", 3, metric);
    if (queries.nbDims != 4) return rankError(kPruneName, "queries", 4, queries);
    if (keys.nbDims != 4) return rankError(kPruneName, "keys", 4, keys);
    if (keyMask.nbDims != 2) return rankError(kPruneName, "key_mask", 2, keyMask);
    if (textMask.nbDims != 2) return rankError(kPruneName, "text_mask", 2, textMask);
    if (Status const s = batchLimitError(kPruneName, {&x, &metric, &queries, &keys, &keyMask, &textMask}); !s.ok)
    {
        return s;
    }
    std::ostringstream msg;
    msg << kPruneName << ": ";
    auto shapes = [&]() {
        std::ostringstream o;
        o << "x " << shapeStr(x) << ", metric " << shapeStr(metric) << ", queries " << shapeStr(queries) << ", keys "
          << shapeStr(keys) << ", key_mask " << shapeStr(keyMask) << ", text_mask " << shapeStr(textMask)
          << " (expected [B, Nk, C], [B, Nk, D], [B, H, text_len, d], [B, H, Nk, d], [B, Nk], [B, text_len])";
        return o.str();
    };
    Shape const* all[] = {&x, &metric, &queries, &keys, &keyMask, &textMask};
    for (Shape const* s1 : all)
    {
        for (Shape const* s2 : all)
        {
            if (differ(s1->d[0], s2->d[0]))
            {
                msg << "batch sizes differ: " << shapes();
                return Status::error(msg.str());
            }
        }
    }
    int64_t const nk[] = {x.d[1], metric.d[1], keys.d[2], keyMask.d[1]};
    for (int64_t u : nk)
    {
        for (int64_t v : nk)
        {
            if (differ(u, v))
            {
                msg << "key counts differ: " << shapes();
                return Status::error(msg.str());
            }
        }
    }
    if (differ(queries.d[1], keys.d[1]) || differ(queries.d[3], keys.d[3]))
    {
        msg << "queries and keys differ in heads or head size: " << shapes();
        return Status::error(msg.str());
    }
    if (differ(queries.d[2], a.textLen) || differ(textMask.d[1], a.textLen))
    {
        msg << "queries and text_mask must have text_len = " << a.textLen << " rows: " << shapes();
        return Status::error(msg.str());
    }
    int64_t tokens = -1;
    for (int64_t u : nk)
    {
        tokens = known(u) ? u : tokens;
    }
    if (known(tokens) && tokens - a.imageStart < a.keep)
    {
        msg << "keep = " << a.keep << " exceeds the " << (tokens - a.imageStart) << " image tokens (Nk = " << tokens
            << ", image_start = " << a.imageStart << ")";
        return Status::error(msg.str());
    }
    if (a.masking == static_cast<int32_t>(Masking::kOFFICIAL) && known(tokens) && tokens < a.textLen)
    {
        msg << "official masking pairs text row t with key t, but there are " << tokens << " keys for "
            << a.textLen << " text rows";
        return Status::error(msg.str());
    }
    if (a.scoreHead >= 0 && known(keys.d[1]) && a.scoreHead >= keys.d[1])
    {
        msg << "score_head = " << a.scoreHead << " but keys have " << keys.d[1] << " heads";
        return Status::error(msg.str());
    }
    if ((known(keys.d[1]) && keys.d[1] < 1) || (known(keys.d[3]) && keys.d[3] < 1))
    {
        msg << "keys have no heads or an empty head size: " << shapes();
        return Status::error(msg.str());
    }
    return Status::success();
}

int64_t mergeMaxR(int64_t tokens) noexcept
{
    return tokens <= 2 ? 0 : (tokens - 1) / 2;
}

Status parseCompactFields(FieldView const* fields, int32_t nbFields, CompactAttrs& out)
{
    for (int32_t i = 0; i < nbFields; ++i)
    {
        if (!isIgnoredField(fields[i]))
        {
            return unknownField(fields[i], kCompactName, "(none)");
        }
    }
    out = CompactAttrs{};
    return Status{};
}

Status validateCompactShapes(Shape const& keep, Shape const& x)
{
    if (keep.nbDims != 2) return rankError(kCompactName, "keep", 2, keep);
    if (x.nbDims != 3) return rankError(kCompactName, "x", 3, x);
    if (Status const s = batchLimitError(kCompactName, {&keep, &x}); !s.ok) return s;
    if (differ(keep.d[0], x.d[0]) || differ(keep.d[1], x.d[1]))
    {
        std::ostringstream msg;
        msg << kCompactName << ": keep " << shapeStr(keep) << " does not match x " << shapeStr(x)
            << " (expected [B, N] and [B, N, C])";
        return Status::error(msg.str());
    }
    return Status{};
}

Status validateMergeShapes(MergeAttrs const& a, Shape const& x, Shape const& metric, Shape const& mask)
{
    if (x.nbDims != 3) return rankError(kMergeName, "x", 3, x);
    if (metric.nbDims != 3) return rankError(kMergeName, "metric", 3, metric);
    if (mask.nbDims != 2) return rankError(kMergeName, "mask", 2, mask);
    if (Status const s = batchLimitError(kMergeName, {&x, &metric, &mask}); !s.ok) return s;
    std::ostringstream msg;
    msg << kMergeName << ": ";
    if (differ(x.d[0], metric.d[0]) || differ(x.d[0], mask.d[0]) || differ(metric.d[0], mask.d[0]))
    {
        msg << "batch sizes differ: x " << shapeStr(x) << ", metric " << shapeStr(metric) << ", mask " << shapeStr(mask);
        return Status::error(msg.str());
    }
    if (differ(x.d[1], metric.d[1]) || differ(x.d[1], mask.d[1]) || differ(metric.d[1], mask.d[1]))
    {
        msg << "token counts differ: x " << shapeStr(x) << ", metric " << shapeStr(metric) << ", mask "
            << shapeStr(mask) << " (expected [B, t, C], [B, t, D], [B, t])";
        return Status::error(msg.str());
    }
    int64_t const t = known(x.d[1]) ? x.d[1] : (known(metric.d[1]) ? metric.d[1] : mask.d[1]);
    if (known(t) && a.r > mergeMaxR(t))
    {
        msg << "r = " << a.r << " exceeds (t - 1) // 2 = " << mergeMaxR(t) << " for t = " << t << " tokens";
        return Status::error(msg.str());
    }
    if (a.r > 0 && known(metric.d[2]) && metric.d[2] > kMaxMergeMetricDim)
    {
        msg << "metric rows of " << metric.d[2] << " features exceed the kernels' " << kMaxMergeMetricDim
            << " (the similarity tiles live in shared memory)";
        return Status::error(msg.str());
    }
    if (a.r > 0 && known(metric.d[2]) && metric.d[2] < 1)
    {
        msg << "metric has no features: " << shapeStr(metric);
        return Status::error(msg.str());
    }
    return Status::success();
}

void pruneOutputShapes(PruneAttrs const& a, Shape const& x, Shape const& metric, Shape out[3])
{
    out[0] = makeShape({x.d[0], a.keep, x.d[2]});
    out[1] = makeShape({x.d[0], a.keep, metric.d[2]});
    out[2] = makeShape({x.d[0], a.keep});
}

void mergeOutputShapes(MergeAttrs const& a, Shape const& x, Shape out[3])
{
    int64_t const t = x.d[1];
    int64_t const kept = known(t) ? t - a.r : -1;
    out[0] = makeShape({x.d[0], kept, x.d[2]});
    out[1] = makeShape({x.d[0], kept});
    out[2] = makeShape({x.d[0], t});
}

size_t alignUp(size_t bytes, size_t align) noexcept
{
    return (bytes + align - 1) / align * align;
}

int64_t nextPow2(int64_t n) noexcept
{
    int64_t p = 1;
    while (p < n)
    {
        p <<= 1;
    }
    return p;
}

PruneWorkspace pruneWorkspaceLayout(int64_t batch, int64_t heads, int64_t textLen, int64_t keys, int64_t imageStart) noexcept
{
    PruneWorkspace w;
    int64_t const images = keys > imageStart ? keys - imageStart : 0;
    auto const bytes = [](int64_t n) { return alignUp(static_cast<size_t>(n > 0 ? n : 0) * sizeof(float)); };
    w.rowStats = 0;
    w.scores = bytes(batch * heads * textLen * 2);
    w.total = w.scores + bytes(batch * images);
    return w;
}

MergeWorkspace mergeWorkspaceLayout(int64_t batch, int64_t tokens, int64_t /*metricDim*/) noexcept
{
    MergeWorkspace w;
    size_t const b = static_cast<size_t>(batch > 0 ? batch : 0);
    size_t const t = static_cast<size_t>(tokens > 0 ? tokens : 0);
    size_t const na = (t + 1) / 2;
    size_t const nb = t / 2;
    size_t at = 0;
    auto take = [&](size_t bytes) {
        size_t const off = at;
        at += alignUp(bytes);
        return off;
    };
    w.nodeMax = take(b * na * sizeof(float));
    w.nodeIdx = take(b * na * sizeof(int32_t));
    w.order = take(b * na * sizeof(int32_t));
    w.rank = take(b * na * sizeof(int32_t));
    w.dstByRank = take(b * na * sizeof(int32_t));
    w.unmList = take(b * na * sizeof(int32_t));
    w.srcList = take(b * na * sizeof(int32_t));
    w.count = take(b * nb * sizeof(int32_t));
    w.offset = take(b * nb * sizeof(int32_t));
    w.total = at;
    return w;
}

CompactWorkspace compactWorkspaceLayout(int64_t batch, int64_t tokens) noexcept
{
    CompactWorkspace w;
    size_t const b = static_cast<size_t>(batch > 0 ? batch : 0);
    size_t const t = static_cast<size_t>(tokens > 0 ? tokens : 0);
    w.order = 0;
    w.counts = alignUp(b * t * sizeof(int32_t));
    w.nMax = w.counts + alignUp(b * sizeof(int32_t));
    w.total = w.nMax + alignUp(sizeof(int32_t));
    return w;
}

} // namespace pumer
