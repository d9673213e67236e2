// SPDX-License-Identifier: MIT
// A domain's connection to the emulated hypervisor (the broker). One client
// per domain process; it is the domain's identity: when the process dies the
// connection closes and the broker destroys the domain.
//
// The client maps what the domain needs and caches per-peer state so that
// the data path (grant copy, notify) never talks to the broker.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.hpp"
#include "hv/emu/layout.hpp"
#include "hv/hv.hpp"

namespace zc::hv::emu {

// The regions of a domain (layout.hpp, "memory regions") as this process
// maps them: which generation of each is mapped, and its memfd (for grant
// map). Written under `lock`; `gen` is read without it on the data path.
struct region_map {
    std::mutex lock;
    std::atomic<uint32_t> gen[region_slots] = {}; // 0 = not mapped
    int fd[region_slots];
    region_map() noexcept;
    ~region_map();
    region_map(const region_map&) = delete;
    region_map& operator=(const region_map&) = delete;
};

// A domain's memory and tables as mapped into this process. For our own
// domain the client maps them at connect; for a peer on first use.
struct domain_view {
    domid_t dom = domid_invalid;
    uint32_t generation = 0;    // registry generation these mappings belong to
    // What the broker hands out (broker.hpp, "Who gets what"): a view of
    // another domain obtained by an unprivileged domain (evtchn_view) has
    // only bindings and bitmaps; mem, mem_fd, gnttab and active are null/-1.
    // Frames [0, mem_pages) are the base memory memfd, MAP_SHARED, RW; the
    // address range goes on over every region's frame window (frame f at
    // mem + f * 4096), mapped on first use (client::region_sync).
    uint8_t* mem = nullptr;
    int mem_fd = -1;             // the guest-memory memfd (for mapping single pages)
    uint32_t mem_pages = 0;
    grant_entry_v1_t* gnttab = nullptr; // nr_grefs entries, RW
    // nr_grefs entries, RW. Of another domain (privileged callers only): its
    // shared active table. Of our own domain: a table private to this
    // process (a domain never gets its own active table, broker.hpp).
    active_entry* active = nullptr;
    uint32_t nr_grefs = 0;
    const evtchn_binding* bindings = nullptr; // max_evtchn_ports, read-only
    const region_slot* regions = nullptr;     // region_slots, read-only (after the bindings)
    std::unique_ptr<region_map> rmap;         // with mem
    evtchn_bitmaps* bitmaps = nullptr;        // RW
};

struct connect_options {
    std::string sock;            // broker socket path; "" = $ZCNET_EMU_SOCK or default
    domid_t dom = domid_invalid; // which domain we are; invalid = $ZCNET_DOMID
    uint32_t mem_pages = 0;      // guest memory for a new domain; 0 = default
    bool attach = false;         // join an existing live domain (a second process of it)
    bool privileged = false;     // create it privileged (a driver domain; dom0 always is)
    // The secret that authenticates us (broker.hpp): the admin token to create
    // a domain, the domain's own token (or the admin token) to attach. Hex;
    // "" = $ZCNET_EMU_TOKEN.
    std::string token;
};

// Default broker socket: $ZCNET_EMU_SOCK, else /run/zcnet-emu/broker.sock.
std::string default_socket();

class client {
public:
    // Connect and create (or attach to) the domain. Errors: -ECONNREFUSED /
    // -ENOENT (no broker), -EEXIST (domain already alive and !attach),
    // -EACCES (no or wrong token), -EINVAL (bad domid), -ENOMEM.
    static result<std::unique_ptr<client>> connect(const connect_options& o, std::string* why) noexcept;
    // A connection that is no domain: only list_domains() and
    // shutdown_broker() (the `zc-emu` tool). `token` (hex) "" =
    // $ZCNET_EMU_TOKEN, else the admin.token file beside the socket.
    static result<std::unique_ptr<client>> connect_admin(const std::string& sock, std::string* why,
                                                         const std::string& token = "") noexcept;
    ~client();

    domid_t self() const noexcept { return _self.dom; }
    const domain_view& self_view() const noexcept { return _self; }
    const registry_slot* registry() const noexcept { return _registry; }
    // Path of this domain's xenstore socket (for XENSTORED_PATH).
    const std::string& xenstore_path() const noexcept { return _xs_path; }
    // This domain's own token, hex: what another process of it attaches with.
    const std::string& domain_token() const noexcept { return _domain_token; }

    bool alive(domid_t d) const noexcept;

    // ---- Lifetime of the views of other domains (docs/ARCHITECTURE.md,
    // "The emulated hypervisor: lifetime of views"). As Xen keeps a domain's
    // struct under RCU (rcu_lock_domain_by_id) and until its last grant
    // mapping goes (put_domain), a view of another domain, and the eventfds
    // of that domain's handles (evtchn_handle_fd), are freed only once
    //   - the domain is dead or a new domain took its domid,
    //   - no grant mapping holds the view (hold/unhold), and
    //   - no read section that began before the view was retired is open.
    // The eventfd of a live domain's handle goes, by the same rule, once no
    // port of that domain is bound to the handle any more.
    // A view pointer may thus be used: inside a read_section; or while held;
    // or, outside both, while its domain stays alive (tests).
    class read_section {
    public:
        explicit read_section(client& c) noexcept : _c(c) { _c._readers.fetch_add(1, std::memory_order_seq_cst); }
        ~read_section() {
            if (_c._readers.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
                _c._reap_pending.load(std::memory_order_relaxed))
                _c.reap();
        }
        read_section(const read_section&) = delete;
        read_section& operator=(const read_section&) = delete;

    private:
        client& _c;
    };
    // Keep `v` (from view()) mapped past the read section: a grant mapping
    // of its memory. Called inside a read section; each hold is undone by
    // one unhold, outside or inside one. Our own view needs none.
    void hold(const domain_view* v) noexcept;
    void unhold(const domain_view* v) noexcept;
    // Retire the views of domains that are dead or re-created, and free
    // what nothing uses any more. unhold() and the evtchn control operations
    // call it; a caller may too. Thread safe.
    void sweep() noexcept;
    // What this client maps of other domains, for tests and the soak:
    // views in use (current or still referenced) and cached handle eventfds.
    struct view_stats {
        uint32_t current = 0, retired = 0, handle_fds = 0;
    };
    view_stats stats() noexcept;

    // Mapped view of domain `d` (our own included), or -ESRCH when `d` is not
    // alive. Valid as said above; if the domain died and a new one took its
    // domid, a fresh view is returned and the stale one is retired. Thread
    // safe; lock-free when the view is cached. -EPERM: `d` is another domain
    // and we are not privileged.
    result<const domain_view*> view(domid_t d) noexcept;
    // view()'s fast path, inline for the grant-copy path: the cached full
    // view of `d` (d < max_domains, not ourselves) if it is of generation
    // `gen`, else nullptr (then ask view()).
    const domain_view* cached_view(domid_t d, uint32_t gen) const noexcept {
        // seq_cst: ordered after the caller's read_section entry (reap()).
        const kept_view* v = _cur[d].load(std::memory_order_seq_cst);
        return v && v->generation == gen ? v : nullptr;
    }
    // A view with at least `d`'s event-channel tables (bindings, bitmaps),
    // which any domain may have. Same lifetime rules as view().
    result<const domain_view*> evtchn_view(domid_t d) noexcept;

    // Event-channel control operations (these go to the broker; notify and
    // pending do not). `handle` comes from evtchn_open.
    result<uint16_t> evtchn_open(int eventfd) noexcept;
    void evtchn_close(uint16_t handle) noexcept;
    result<evtchn_port_t> evtchn_alloc_unbound(uint16_t handle, domid_t remote) noexcept;
    result<evtchn_port_t> evtchn_bind_interdomain(uint16_t handle, domid_t remote, evtchn_port_t rport) noexcept;
    int evtchn_unbind(evtchn_port_t port) noexcept;
    // The eventfd that delivers handle `h` of the domain `v` is a view of
    // (cached per generation of the domain). Valid inside the read section
    // in which `v` was obtained. For notify.
    result<int> evtchn_handle_fd(const domain_view& v, uint16_t handle) noexcept;

    // Memory regions (layout.hpp). region_new populates one of our own:
    // its index, its first frame, its memfd (owned by the client: dup it to
    // hand it on) and the pages mapped at self_view().mem + first * 4096.
    // Errors: -EINVAL (pages 0 or > region_max_pages), -ENOMEM (the
    // domain's region budget), -ENOSPC (no free region).
    struct region {
        uint32_t index = 0, first = 0;
        int fd = -1;
    };
    result<region> region_new(uint32_t pages) noexcept;
    int region_free(uint32_t index) noexcept;
    // Make region frame `frame` of `v` (frame >= v.mem_pages, validated by
    // the grant check against v.regions) usable at v.mem + frame * 4096:
    // maps the region's current memfd if this process maps none or an
    // older one. 0, or -errno (the broker's).
    int region_sync(const domain_view& v, uint32_t frame) noexcept;
    // The memfd that backs frame `frame` of `v` and the frame's offset in
    // it (for mmap): v.mem_fd for base memory, else a new fd the caller
    // closes; -1 when none is mapped here.
    int frame_fd(const domain_view& v, uint32_t frame, uint64_t* offset) const noexcept;

    // Grant map/copy of another domain's grant by an unprivileged domain:
    // the broker validates and pins it (foreign.hpp). status is Xen's
    // GNTST_* (GNTST_general_error when the broker cannot be asked); when
    // GNTST_okay, `fd` (the caller closes it) holds the granted page at
    // offset `offset`, and `gen` goes back to grant_unpin.
    struct foreign_page {
        int16_t status = GNTST_general_error;
        int fd = -1;
        uint64_t offset = 0;
        uint32_t gen = 0;
    };
    foreign_page grant_pin(domid_t granter, gref_t ref, bool readonly, bool mapflag) noexcept;
    // Drop one pin grant_pin made. 0, -EINVAL (no such pin), or the broker's error.
    int grant_unpin(domid_t granter, uint32_t gen, gref_t ref, bool readonly) noexcept;

    // Administrative: list of live domains, broker shutdown.
    result<std::vector<domid_t>> list_domains() noexcept;
    int shutdown_broker() noexcept;

private:
    client() = default;
    struct reply;
    int call(const void* req, size_t len, reply& out) noexcept;
    int call_locked(const void* req, size_t len, reply& out) noexcept;
    static int dial(client& c, const std::string& path, std::string* why) noexcept;
    // A request whose reply carries only rc.
    int call_rc(const void* req, size_t len) noexcept;
    // A request with one fd in the reply: rc, h (a, b) and *fd.
    int call_fd(const void* req, size_t len, uint32_t* a, uint32_t* b, int* fd) noexcept;
    int map_region(const domain_view& v, uint32_t index, uint32_t gen, uint32_t pages, int fd) noexcept;
    result<const domain_view*> fetch_view(domid_t d, bool evtchn_only) noexcept;

    int _fd = -1;
    std::mutex _call_lock;  // one request/response at a time on _fd
    int _pending_fd = -1;   // fd to attach to the next request; under _call_lock
    domain_view _self;
    const registry_slot* _registry = nullptr;
    std::string _xs_path;
    std::string _domain_token;
    uint8_t _token[32] = {}; // what we authenticated with; sent with admin ops
    // A view of another domain as the client keeps it (the lifetime rules
    // above): current in _cur/_ev_cur (by domid, so that the data path finds
    // it with two atomic loads), or retired and waiting to be freed.
    struct kept_view : domain_view {
        mutable std::atomic<uint32_t> holds{0};
        bool evtchn_only = false;
    };
    void retire_locked(size_t live_index) noexcept; // under _views_lock
    void reap() noexcept;
    void reap_locked() noexcept; // under _views_lock
    bool current(const domain_view& v) const noexcept;
    result<const domain_view*> install_view(std::unique_ptr<kept_view> v) noexcept;
    static void unmap_view(domain_view& v) noexcept; // its mappings and mem_fd

    std::atomic<uint32_t> _readers{0};       // open read sections
    std::atomic<bool> _reap_pending{false};  // a reap found a read section open
    std::mutex _views_lock;                  // protects everything below; _cur/_ev_cur written under it
    // By domid: full / event-channel-only views.
    std::unique_ptr<std::atomic<kept_view*>[]> _cur{new std::atomic<kept_view*>[max_domains]()};
    std::unique_ptr<std::atomic<kept_view*>[]> _ev_cur{new std::atomic<kept_view*>[max_domains]()};
    std::vector<std::unique_ptr<kept_view>> _live;    // the views in _cur/_ev_cur
    std::vector<std::unique_ptr<kept_view>> _retired; // out of them, not yet freed
    // (generation << 32 | dom << 16 | handle) -> fd. The generation is part
    // of the key: a re-created domain reuses its domid and its handle
    // numbers, and its events must reach its new handles. reap() closes a
    // dead generation's fds, and those of handles no port is bound to any
    // more (a closed handle of a live domain).
    std::unordered_map<uint64_t, int> _handle_fds;
};

} // namespace zc::hv::emu
