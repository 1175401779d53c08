// LoopTree: validation, ranges, the text dump and its parser, and a stable hash.
#include "looptune/loop_tree.h"
#include "looptune/mutations.h"

#include <sstream>
#include <stdexcept>

namespace looptune {

namespace {

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument(msg); }

// FNV-1a, 64 bit: stable across processes, platforms and library versions.
constexpr uint64_t kFnvOffset = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

uint64_t fnv_bytes(uint64_t h, const void* data, size_t n) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnvPrime;
  }
  return h;
}

uint64_t fnv_int(uint64_t h, int64_t v) {
  unsigned char b[8];
  const uint64_t u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>((u >> (8 * i)) & 0xff);
  return fnv_bytes(h, b, 8);
}

// Index expressions of one tensor, for the informational statement line of dump().
std::string access(const Computation& c, const TensorAccess& t, const std::string& letters) {
  std::string s = t.name + "[";
  if (c.kind == "conv2d") {
    std::string st = std::to_string(c.conv_stride);
    if (t.name == "I") s += "n,c,oh*" + st + "+r,ow*" + st + "+s";
    else if (t.name == "W") s += "k,c,r,s";
    else s += "n,k,oh,ow";
  } else {
    for (size_t i = 0; i < letters.size(); ++i) s += (i ? "," : "") + std::string(1, letters[i]);
  }
  return s + "]";
}

std::string statement(const Computation& c) {
  std::string spec = c.spec;
  size_t comma = spec.find(','), arrow = spec.find("->");
  std::string a = spec.substr(0, comma), b = spec.substr(comma + 1, arrow - comma - 1),
              o = spec.substr(arrow + 2);
  return access(c, c.out, o) + " += " + access(c, c.in0, a) + " * " + access(c, c.in1, b);
}

int64_t parse_count(const std::string& tok, const std::string& line) {
  if (tok.empty() || tok.size() > 18 || tok.find_first_not_of("0123456789") != std::string::npos)
    bad("expected a number, got '" + tok + "' in loop line '" + line + "'");
  return std::stoll(tok);
}

}  // namespace

LoopTree::LoopTree(std::shared_ptr<const Computation> comp, std::vector<Loop> loops, int cursor)
    : comp_(std::move(comp)), loops_(std::move(loops)), cursor_(cursor) {
  validate();
}

LoopTree LoopTree::base(std::shared_ptr<const Computation> comp) {
  if (!comp) bad("LoopTree needs a computation");
  std::vector<Loop> loops;
  for (size_t v = 0; v < comp->vars.size(); ++v) loops.push_back(Loop{static_cast<int>(v), 1});
  return LoopTree(std::move(comp), std::move(loops), 0);
}

void LoopTree::validate() const {
  if (!comp_) bad("LoopTree needs a computation");
  const int nvars = static_cast<int>(comp_->vars.size());
  if (loops_.empty()) bad("a loop tree needs at least one loop");
  if (depth() > kMaxTreeLoops)
    bad("a loop tree has at most " + std::to_string(kMaxTreeLoops) + " loops, got " +
        std::to_string(depth()));
  if (cursor_ < 0 || cursor_ >= depth())
    bad("cursor " + std::to_string(cursor_) + " is outside 0.." + std::to_string(depth() - 1));
  std::vector<int64_t> last_step(nvars, 0);  // step of the latest loop seen per var (0: none)
  for (int i = 0; i < depth(); ++i) {
    const Loop& l = loops_[i];
    if (l.var < 0 || l.var >= nvars) bad("loop " + std::to_string(i) + " has no variable");
    const std::string& name = comp_->vars[l.var].name;
    // step <= range: steps of one variable never increase inward (equal steps give a loop of
    // size 1, which is what splitting a loop by its full size produces).
    int64_t range = last_step[l.var] ? last_step[l.var] : comp_->vars[l.var].extent;
    if (l.step < 1 || l.step > range)
      bad("loop " + std::to_string(i) + " over '" + name + "' has step " +
          std::to_string(l.step) + ", outside 1.." + std::to_string(range));
    last_step[l.var] = l.step;
  }
  int parallel = -1;
  for (int i = 0; i < depth(); ++i) {
    if (!loops_[i].parallel) continue;
    if (parallel >= 0)
      bad("loops " + std::to_string(parallel) + " and " + std::to_string(i) +
          " are both parallel; a tree has at most one parallel loop");
    parallel = i;
    const std::string why = parallel_illegal(i);
    if (!why.empty()) bad(why);
  }
  for (int v = 0; v < nvars; ++v) {
    if (!last_step[v]) bad("variable '" + comp_->vars[v].name + "' has no loop");
    if (last_step[v] != 1)
      bad("the innermost loop over '" + comp_->vars[v].name + "' must have step 1, got " +
          std::to_string(last_step[v]));
  }
}

int64_t LoopTree::range(int i) const {
  const int var = loops_.at(i).var;
  for (int j = i - 1; j >= 0; --j)
    if (loops_[j].var == var) return loops_[j].step;
  return comp_->vars[var].extent;
}

int LoopTree::parallel_loop() const {
  for (int i = 0; i < depth(); ++i)
    if (loops_[i].parallel) return i;
  return -1;
}

std::string LoopTree::parallel_illegal(int i) const {
  const Var& v = comp_->vars[loops_.at(i).var];
  if (v.reduction)
    return "loop " + std::to_string(i) + " over '" + v.name +
           "' is a reduction loop: its iterations add into the same output elements";
  if (i == depth() - 1)
    return "loop " + std::to_string(i) + " over '" + v.name +
           "' is the innermost loop (the vector loop); a parallel loop needs a loop below it";
  return "";
}

int64_t LoopTree::size(int i) const { return range(i) / loops_.at(i).step; }
int64_t LoopTree::tail(int i) const { return range(i) % loops_.at(i).step; }

bool LoopTree::operator==(const LoopTree& o) const {
  if (cursor_ != o.cursor_ || loops_ != o.loops_) return false;
  return comp_ == o.comp_ || (comp_ && o.comp_ && comp_->header() == o.comp_->header());
}

uint64_t LoopTree::hash() const {
  const std::string h = comp_->header();
  uint64_t x = fnv_bytes(kFnvOffset, h.data(), h.size());
  for (const Loop& l : loops_) {
    x = fnv_int(x, l.var);
    x = fnv_int(x, l.step);
    // (a new flag adds a bit: hashes of trees without it, and their records, stay valid)
    x = fnv_int(x, (l.unroll ? 1 : 0) | (l.vectorize ? 2 : 0) | (l.parallel ? 4 : 0));
  }
  return x;
}

uint64_t LoopTree::state_hash() const { return fnv_int(hash() ^ 0x5bd1e995u, cursor_); }

std::string LoopTree::dump() const {
  std::ostringstream os;
  os << "# " << comp_->header() << '\n';
  std::vector<int> seen(comp_->vars.size(), 0);
  for (int i = 0; i < depth(); ++i) {
    const Loop& l = loops_[i];
    os << std::string(i, ' ') << "for " << comp_->vars[l.var].name
       << std::string(seen[l.var]++, '\'') << " in " << size(i);
    if (tail(i)) os << " r " << tail(i);
    if (l.unroll) os << " [unroll]";
    if (!l.vectorize) os << " [novec]";
    if (l.parallel) os << " [parallel]";
    if (i == cursor_) os << "  <-";
    os << '\n';
  }
  os << std::string(depth(), ' ') << statement(*comp_) << '\n';
  return os.str();
}

LoopTree LoopTree::parse(const std::string& text) {
  constexpr size_t kMaxText = 1 << 20, kMaxLine = 4096;
  if (text.size() > kMaxText)
    bad("a loop tree dump has at most " + std::to_string(kMaxText) + " bytes, got " +
        std::to_string(text.size()));
  for (size_t i = 0; i < text.size(); ++i)
    if (static_cast<unsigned char>(text[i]) >= 0x80)
      bad("a loop tree dump is ASCII; found a non-ASCII byte at offset " + std::to_string(i));
  std::istringstream is(text);
  std::string line;
  if (!std::getline(is, line) || line.rfind("# ", 0) != 0)
    bad("a loop tree dump starts with '# <computation header>'");
  auto comp = std::make_shared<const Computation>(parse_computation(line.substr(2)));
  std::vector<Loop> loops;
  std::vector<int64_t> last_step(comp->vars.size(), 0);
  std::vector<int> seen(comp->vars.size(), 0);
  int cursor = -1;
  bool statement_seen = false;
  while (std::getline(is, line)) {
    if (line.size() > kMaxLine)
      bad("a loop tree dump line has at most " + std::to_string(kMaxLine) + " characters");
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos) continue;
    std::istringstream ls(line);
    std::string word, name, in;
    ls >> word;
    if (word != "for") {  // the statement: exactly the computation's, once, after the loops
      const std::string expected = statement(*comp);
      if (statement_seen || line.substr(indent) != expected)
        bad("expected the statement '" + expected + "', got '" + line.substr(0, 80) + "'");
      statement_seen = true;
      continue;
    }
    if (statement_seen) bad("loop line after the statement: '" + line + "'");
    if (indent != loops.size())
      bad("loop line '" + line + "' should be indented by " + std::to_string(loops.size()));
    std::string size_tok;
    if (!(ls >> name >> in >> size_tok) || in != "in") bad("malformed loop line '" + line + "'");
    size_t primes = name.size() - name.find_last_not_of('\'') - 1;
    int var = comp->var_index(name.substr(0, name.size() - primes));
    if (var < 0) bad("unknown variable in loop line '" + line + "'");
    if (static_cast<int>(primes) != seen[var]++)
      bad("loop line '" + line + "' has the wrong number of primes");
    Loop loop{var, 1, false, true};
    int64_t size = parse_count(size_tok, line), tail = 0;
    std::string tok;
    while (ls >> tok) {
      if (tok == "r" && ls >> tok) tail = parse_count(tok, line);
      else if (tok == "[unroll]") loop.unroll = true;
      else if (tok == "[novec]") loop.vectorize = false;
      else if (tok == "[parallel]" && !loop.parallel) loop.parallel = true;
      else if (tok == "<-" && cursor < 0) cursor = static_cast<int>(loops.size());
      else bad("unexpected '" + tok + "' in loop line '" + line + "'");
    }
    int64_t range = last_step[var] ? last_step[var] : comp->vars[var].extent;
    if (size < 1 || tail >= range || (range - tail) % size != 0)
      bad("loop line '" + line + "' does not match a range of " + std::to_string(range));
    if (loop.unroll && size > kMaxUnroll)
      bad("loop line '" + line + "' unrolls " + std::to_string(size) +
          " iterations; the unroll limit is " + std::to_string(kMaxUnroll));
    loop.step = (range - tail) / size;
    if (range / loop.step != size || range % loop.step != tail)
      bad("loop line '" + line + "' does not match a range of " + std::to_string(range));
    last_step[var] = loop.step;
    loops.push_back(loop);
    if (loops.size() > static_cast<size_t>(kMaxTreeLoops)) bad("too many loops in dump");
  }
  if (cursor < 0) bad("a loop tree dump marks the cursor with '<-'");
  return LoopTree(std::move(comp), std::move(loops), cursor);
}

}  // namespace looptune
