// SPDX-License-Identifier: MIT
// The pool manager of one local domain (docs/ARCHITECTURE.md, "Pools"): one
// pool per peer domain, a shared fallback pool of bounce buffers, a global
// grant budget, the foreign-grant revocation generations that keep frames
// from being sent out of a revoked grant, and the counters.
//
// Where a frame for peer B goes (stage()):
//   1. into B's pool, the one copy (grant copy for a foreign source);
//   2. B's pool exhausted or over quota: into bounce buffers, so that the
//      source (another guest's TX slot, another pool's buffer) can go back to
//      its owner now; counted as a fallback. restage() moves it into B's pool
//      once B has room again (the second copy);
//   3. bounce exhausted too: -ENOBUFS, counted as backpressure. The caller
//      keeps its frame and retries later. A frame is never dropped silently.
// While frames for B wait in bounce buffers (B's backlog), new frames for B
// go to bounce too even if B's pool has room again: frames to one
// destination never overtake each other, and the oldest waiting frame can
// always be restaged once the frames ahead of it are consumed (a newer frame
// can never sit on the buffer it needs). Fallback stops once the backlog is
// gone and the pool has room.
//
// Threading: every member is thread-safe. open_peer/teardown_peer/maintain
// serialize on the manager's mutex; stage/alloc_for/gate/release take no
// manager lock (pool lookup is an atomic load from a table indexed by domid).
// Pool objects live as long as the manager (a torn-down peer's pool is
// reopened when the peer comes back), so a pool* is never dangling.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "common/result.hpp"
#include "hv/hv.hpp"
#include "pool/frame.hpp"
#include "pool/pool.hpp"

namespace zc::pool {

struct manager_options {
    pool_options pool;               // template for every peer's pool (`peer` is set per pool)
    uint32_t max_grants = 4096;      // grant entries across all pools of this domain
    uint32_t bounce_buf_size = 2048; // power of two, 64..32768
    // Bounce buffers, rounded up so that they fill a power-of-two number of
    // pages. 0 disables the fallback: exhaustion is backpressure at once.
    uint32_t bounce_buffers = 256;
};

struct manager_counters {
    // Summed over every pool (open or torn down) and the bounce pool.
    uint64_t allocs = 0;
    uint64_t frees = 0;
    uint64_t grows = 0;
    uint64_t shrinks = 0;
    uint64_t unshare_busy = 0;
    uint64_t double_frees = 0;       // release/free of a buffer already free (-EALREADY)
    uint64_t bad_frees = 0;          // release/free of something not ours (-EINVAL)
    // The manager's own.
    uint64_t direct = 0;             // frames placed in the destination pool (stage, alloc_for)
    uint64_t fallbacks = 0;          // frames placed in bounce buffers instead
    uint64_t restaged = 0;           // bounce frames moved into the destination pool later
    uint64_t backpressure = 0;       // -ENOBUFS answers: nowhere to put the frame
    uint64_t revoked_drops = 0;      // frames refused because a grant was revoked or the pool torn down
    uint64_t copy_errors = 0;        // grant-copy segments that failed (source grant gone)
    uint32_t grants_used = 0;        // global grant budget in use
    uint32_t grants_limit = 0;
    uint32_t pools_open = 0;
    uint32_t pools_draining = 0;     // torn down, grants not all ended yet
};

// stage() flags.
inline constexpr uint32_t stage_no_fallback = 1u << 0; // destination pool or nothing (restage)

class manager {
public:
    // `shr` grants the pools' pages; `tab` grant-copies out of foreign
    // segments (may be null when no frame will ever be foreign). Both must
    // outlive the manager. Errors: -EINVAL (bad options), -ENOMEM.
    static result<std::unique_ptr<manager>> create(hv::gntshr& shr, hv::gnttab* tab,
                                                   const manager_options& o) noexcept;
    ~manager();
    manager(const manager&) = delete;
    manager& operator=(const manager&) = delete;

    // ---- pools ---------------------------------------------------------------
    // Create `peer`'s pool, or reopen it after a teardown once it has drained.
    // Errors: -EINVAL (peer is not a grantable domid), -EBUSY (the previous
    // incarnation still holds grants; maintain() and retry), -ENOMEM.
    result<pool*> open_peer(hv::domid_t peer) noexcept;
    // The open pool of `peer`, or nullptr.
    pool* find(hv::domid_t peer) const noexcept;
    // Close `peer`'s pool and revoke every foreign segment stamped from
    // `peer`. Frames in flight stay valid to release; gate() refuses to send
    // them. Grants end as buffers come back and the peer unmaps (maintain()).
    void teardown_peer(hv::domid_t peer) noexcept;
    // nullptr when bounce_buffers == 0.
    pool* bounce() noexcept { return _bounce.get(); }

    // ---- frames --------------------------------------------------------------
    // A foreign segment for bytes `peer` granted us. Peer input, so checked:
    // -EINVAL when offset + len crosses the page, or dom is not a domid.
    result<frame> stamp_foreign(hv::domid_t dom, hv::gref_t gref, uint16_t offset, uint16_t len,
                                bool readonly) noexcept;
    // Frames for `peer` waiting in bounce buffers.
    uint32_t backlog(hv::domid_t peer) const noexcept;
    // Every foreign segment stamped from `dom` so far is revoked.
    void revoke_foreign(hv::domid_t dom) noexcept;
    // The segment is foreign and revoked, or local to a torn-down pool.
    bool revoked(const frame& seg) const noexcept;

    // Buffers for `len` bytes bound for `peer` (the first segment with
    // `headroom` reserved), chained in out[0..n). Returns n. Falls back to
    // bounce buffers like stage(). Errors: -ENOLINK (no open pool for peer),
    // -EMSGSIZE (more than `nout` segments needed, or headroom too large),
    // -ENOBUFS (backpressure).
    int alloc_for(hv::domid_t peer, uint32_t len, uint16_t headroom, frame* out, uint32_t nout) noexcept;

    // Copy `src`'s bytes into memory bound for `peer`, chained in out[0..n);
    // returns n, or 0 when `src` already lies entirely in peer's pool
    // (nothing to do). `src` is untouched: on success the caller releases it
    // (and completes a foreign source to its granter); on error it still owns
    // it. Checksum and GSO fields travel with the first segment.
    // Errors: -ENOLINK (no open pool for peer), -EKEYREVOKED (a foreign
    //   segment of src was revoked: counted, drop it), -EFAULT (a grant copy
    //   failed: the granter ended the grant; counted, drop it), -EMSGSIZE,
    //   -EOPNOTSUPP (foreign source but no gnttab), -ENOBUFS (no room in the
    //   pool, and with stage_no_fallback not counted as backpressure).
    int stage(hv::domid_t peer, const frame& src, frame* out, uint32_t nout, uint32_t flags = 0) noexcept;
    // Move a frame staged in bounce buffers into `peer`'s pool once it has
    // room. On success `f` (the bounce chain) is released and out[0..n) holds
    // the frame; returns n (0: f is not in bounce buffers, nothing to do).
    // -ENOBUFS: still no room, `f` untouched. Other errors as stage().
    int restage(hv::domid_t peer, frame& f, frame* out, uint32_t nout) noexcept;

    // The last check before a frame's bytes leave for its destination (never
    // transmit from a grant that is no longer valid). Returns 0 if
    // every segment is live and `dest`'s pool is open (dest == domid_invalid:
    // not checked). Otherwise releases the frame, counts a revoked drop and
    // returns -EKEYREVOKED (a segment) or -ENOLINK (the destination).
    int gate(frame& f, hv::domid_t dest = hv::domid_invalid) noexcept;
    // Release every local segment of the chain (foreign ones need nothing
    // here) and clear them. Returns 0 or the first error of pool::release.
    // Frames from stage()/alloc_for() must come back through here (or
    // restage/gate), not pool::release, so that the backlog stays right.
    int release(frame& f) noexcept;

    // Grow, shrink and end grants of every pool. Returns the number of torn
    // down pools still waiting for grants to end.
    int maintain() noexcept;
    manager_counters counters() const noexcept;
    granter& grants() noexcept { return *_granter; }

private:
    manager() noexcept = default;
    int alloc_n(pool& p, uint32_t len, uint16_t headroom, frame* out, uint32_t nout) noexcept;
    int copy_into(const frame& src, frame* out, uint32_t n) noexcept;
    void mark_backlog(hv::domid_t peer, frame* out, int n) noexcept;

    manager_options _opt;
    hv::gnttab* _tab = nullptr;
    std::unique_ptr<granter> _granter;  // declared before pools: outlives them
    std::unique_ptr<pool> _bounce;
    // Indexed by domid (< DOMID_FIRST_RESERVED). A slot, once set, always
    // points to the same pool (closed or open), owned by _owned.
    std::unique_ptr<std::atomic<pool*>[]> _by_dom;
    // Per granting domain: bumped by revoke_foreign. A foreign segment is
    // live while its cookie equals its granter's generation.
    std::unique_ptr<std::atomic<uint32_t>[]> _foreign_gen;
    // Per destination domid: frames waiting in bounce buffers.
    std::unique_ptr<std::atomic<uint32_t>[]> _backlog;

    mutable std::mutex _lock; // protects _owned and pool creation
    std::vector<std::unique_ptr<pool>> _owned;

    struct stats {
        std::atomic<uint64_t> direct{0}, fallbacks{0}, restaged{0}, backpressure{0}, revoked_drops{0},
            copy_errors{0};
    };
    stats _stats;
};

} // namespace zc::pool
