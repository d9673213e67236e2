// SPDX-License-Identifier: MIT
// Emulated event channels.
//
// A handle is an eventfd registered with the broker. Bindings (which port
// talks to which remote port, and which handle it delivers to) are broker
// memory, read-only here. Pending and mask bits live in a per-domain bitmap
// page that notifiers map: notify() sets the remote port's pending bit and,
// if it was clear and the port is not masked, kicks the remote handle's
// eventfd. As in the Linux evtchn driver, a port that is delivered through
// pending() is masked until unmask().
//
// The pending/mask race: notify does fetch_or(pending) then load(mask);
// unmask does fetch_and(~mask) then load(pending). Both are seq_cst, so at
// least one side sees the other's store and the event is not lost.
#include "hv/emu/evtchn.hpp"

#include <cerrno>
#include <mutex>
#include <sys/eventfd.h>
#include <unistd.h>
#include <vector>

namespace zc::hv::emu {

namespace {

inline std::atomic<uint64_t>& word(std::atomic<uint64_t>* bits, evtchn_port_t p) noexcept { return bits[p / 64]; }
inline uint64_t bit(evtchn_port_t p) noexcept { return uint64_t(1) << (p % 64); }

class emu_evtchn final : public evtchn {
public:
    emu_evtchn(client& c, int efd, uint16_t handle) noexcept : _c(c), _efd(efd), _handle(handle) {}
    ~emu_evtchn() override {
        _c.evtchn_close(_handle); // the broker unbinds every port of the handle
        ::close(_efd);
    }

    int fd() const noexcept override { return _efd; }

    result<evtchn_port_t> bind_unbound(domid_t remote) noexcept override {
        auto p = _c.evtchn_alloc_unbound(_handle, remote);
        if (p) add_port(*p);
        return p;
    }

    result<evtchn_port_t> bind_interdomain(domid_t remote, evtchn_port_t rport) noexcept override {
        auto p = _c.evtchn_bind_interdomain(_handle, remote, rport);
        if (p) add_port(*p);
        return p;
    }

    int unbind(evtchn_port_t port) noexcept override {
        if (!owns(port)) return -EINVAL;
        int rc = _c.evtchn_unbind(port);
        std::lock_guard<std::mutex> g(_lock);
        std::erase(_ports, port);
        auto* bm = _c.self_view().bitmaps;
        word(bm->pending, port).fetch_and(~bit(port));
        word(bm->mask, port).fetch_and(~bit(port));
        return rc;
    }

    int notify(evtchn_port_t port) noexcept override {
        if (!owns(port)) return -EINVAL;
        const evtchn_binding& b = _c.self_view().bindings[port];
        if (b.state.load(std::memory_order_acquire) != ecs_interdomain) return 0; // Xen drops it silently
        domid_t rd = b.remote_dom;
        evtchn_port_t rp = b.remote_port;
        if (rp == 0 || rp >= max_evtchn_ports) return 0;
        client::read_section rs(_c); // the peer's view and eventfd (client.hpp)
        auto v = _c.evtchn_view(rd);
        if (!v) return 0; // peer died: nothing to deliver to
        const evtchn_binding& rb = (*v)->bindings[rp];
        // Deliver only if the remote end still points back at us.
        if (rb.state.load(std::memory_order_acquire) != ecs_interdomain || rb.remote_dom != _c.self() ||
            rb.remote_port != port)
            return 0;
        _counters.notifies++;
        evtchn_bitmaps* bm = (*v)->bitmaps;
        uint64_t was = word(bm->pending, rp).fetch_or(bit(rp));
        if (was & bit(rp)) return 0;
        if (word(bm->mask, rp).load() & bit(rp)) return 0;
        auto fd = _c.evtchn_handle_fd(**v, rb.handle);
        if (!fd) return 0;
        uint64_t one = 1;
        (void)!::write(*fd, &one, sizeof one);
        return 0;
    }

    // The fd is readable while a deliverable (pending, unmasked) port may
    // exist, as the Linux driver's is while its ring holds ports. Callers
    // loop pending() until -EAGAIN after each wake-up, so the eventfd is
    // drained only when the port returned is the last deliverable one (or
    // nothing is), not on every call: the old drain-then-kick_self() cost a
    // read and a write per port. Invariant kept: after every drain we scan
    // again, so a port that became deliverable before the drain is either
    // returned or re-signalled (kick_self), and one that becomes deliverable
    // after it is signalled by its notifier; no event is lost.
    result<evtchn_port_t> pending() noexcept override {
        auto* bm = _c.self_view().bitmaps;
        std::lock_guard<std::mutex> g(_lock);
        size_t n = _ports.size();
        auto deliverable = [&](evtchn_port_t q) {
            return (word(bm->pending, q).load() & bit(q)) && !(word(bm->mask, q).load() & bit(q));
        };
        auto any_deliverable = [&] {
            for (size_t j = 0; j < n; j++)
                if (deliverable(_ports[j])) return true;
            return false;
        };
        for (int pass = 0; pass < 2; pass++) {
            for (size_t i = 0; i < n; i++) {
                evtchn_port_t p = _ports[(_next + i) % n];
                if (word(bm->mask, p).load() & bit(p)) continue;
                if (!(word(bm->pending, p).fetch_and(~bit(p)) & bit(p))) continue;
                word(bm->mask, p).fetch_or(bit(p));
                _next = (_next + i + 1) % n; // round robin: no port starves the others
                if (!any_deliverable()) {
                    // Last one: the fd must not stay readable for nothing.
                    drain();
                    _just_drained = true;
                    if (any_deliverable()) kick_self(); // raced with a notifier
                }
                return p;
            }
            // Nothing deliverable. The previous call drained after its scan
            // found nothing more: a notifier's write that landed since only
            // makes the fd spuriously readable once (the next -EAGAIN call
            // drains), so skip this read.
            if (_just_drained) {
                _just_drained = false;
                break;
            }
            drain();
            _just_drained = false;
            // Rescan: a port may have become deliverable between the scan
            // and the drain, its notifier's write now consumed.
        }
        return err(-EAGAIN);
    }

    int unmask(evtchn_port_t port) noexcept override {
        if (!owns(port)) return -EINVAL;
        auto* bm = _c.self_view().bitmaps;
        word(bm->mask, port).fetch_and(~bit(port));
        if (word(bm->pending, port).load() & bit(port)) kick_self();
        return 0;
    }

    op_counters counters() const noexcept override { return _counters; }

private:
    void kick_self() noexcept {
        uint64_t one = 1;
        (void)!::write(_efd, &one, sizeof one);
    }
    void drain() noexcept {
        uint64_t cnt;
        (void)!::read(_efd, &cnt, sizeof cnt); // EAGAIN is fine
    }
    void add_port(evtchn_port_t p) noexcept {
        std::lock_guard<std::mutex> g(_lock);
        _ports.push_back(p);
    }
    bool owns(evtchn_port_t p) noexcept {
        if (p == 0 || p >= max_evtchn_ports) return false;
        std::lock_guard<std::mutex> g(_lock);
        for (auto q : _ports)
            if (q == p) return true;
        return false;
    }

    client& _c;
    int _efd;
    uint16_t _handle;
    std::mutex _lock;                  // protects _ports, _next
    std::vector<evtchn_port_t> _ports; // ports bound through this handle
    size_t _next = 0;
    bool _just_drained = false; // the last pending() drained after its final scan
    op_counters _counters;
};

} // namespace

result<std::unique_ptr<evtchn>> make_evtchn(client& c) noexcept {
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) return err(-errno);
    auto h = c.evtchn_open(efd); // SCM_RIGHTS gives the broker its own copy for notifiers
    if (!h) {
        ::close(efd);
        return err(h.error());
    }
    return std::unique_ptr<evtchn>(new emu_evtchn(c, efd, *h));
}

} // namespace zc::hv::emu
