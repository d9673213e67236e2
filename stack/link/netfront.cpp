// SPDX-License-Identifier: MIT
// The userspace netfront's public methods: construction (connect), the
// accessors, and the entry points that delegate to the xenbus side
// (netfront_bus.cpp), the TX ring (netfront_tx.cpp) and the RX ring
// (netfront_rx.cpp); the stats and what those files share. See
// netfront_impl.hpp for the private state.
#include "link/netfront.hpp"

#include <cerrno>
#include <vector>

#include <poll.h>

#include "common/counters.hpp"
#include "link/netfront_impl.hpp"

namespace zc::link {

using namespace detail;

void netfront::impl::mark_broken(const std::string& why) noexcept {
    {
        std::lock_guard g(why_lock);
        if (broken_why.empty()) broken_why = why;
    }
    if (!is_broken.exchange(true)) ZC_LOG(error, tag, "%s: %s; disabled for further use", fe_path.c_str(), why.c_str());
}

void netfront::impl::notify(nf_queue& q, hv::evtchn_port_t p, uint64_t& ctr) noexcept {
    if (q.ev && q.ev->notify(p) == 0) ctr++;
}

// ---------------------------------------------------------------------------

netfront::netfront(std::unique_ptr<impl> p) noexcept : _p(std::move(p)) {}

netfront::~netfront() {
    if (!_p) return;
    (void)disconnect();
    if (_p->xs && !_p->be_path.empty()) (void)_p->xs->unwatch(_p->be_path + "/state", _p->watch_token);
}

result<std::unique_ptr<netfront>> netfront::connect(hv::port& port, const netfront_options& o, std::string* why) noexcept {
    auto fail = [&](int rc, const std::string& msg) -> result<std::unique_ptr<netfront>> {
        if (why) *why = msg;
        return err(rc);
    };
    if (o.max_queues == 0 || o.tx_buffers == 0 || o.tx_buffers > netif_tx_ring_size ||
        o.rx_buffers < netif_rx_slots_min || o.rx_buffers > netif_rx_ring_size || o.timeout_ms == 0)
        return fail(-EINVAL, "netfront: bad options (max_queues >= 1, tx_buffers 1..256, rx_buffers 19..256)");

    auto p = std::make_unique<impl>();
    p->port = &port;
    p->opts = o;
    auto x = hv::xs::open(port.xenstore_path());
    if (!x) return fail(x.error(), "netfront: cannot open xenstore");
    p->xs = std::move(*x);
    auto g = port.open_gntshr();
    if (!g) return fail(g.error(), "netfront: cannot open gntshr");
    p->gs = std::move(*g);
    if (int rc = p->probe(why); rc) return err(rc);

    std::unique_ptr<netfront> nf(new netfront(std::move(p)));
    // From here failures go through the destructor, which closes the bus and
    // ends the grants.
    if (int rc = nf->_p->connect(why); rc) return err(rc);
    return nf;
}

uint32_t netfront::queues() const noexcept { return uint32_t(_p->qs.size()); }
const mac_addr& netfront::mac() const noexcept { return _p->mac; }
hv::domid_t netfront::backend_id() const noexcept { return _p->be_id; }
const std::string& netfront::frontend_path() const noexcept { return _p->fe_path; }
const std::string& netfront::backend_path() const noexcept { return _p->be_path; }
bool netfront::backend_sg() const noexcept { return _p->be_sg; }
bool netfront::backend_gso_tcpv4() const noexcept { return _p->be_gso4; }
bool netfront::backend_gso_tcpv6() const noexcept { return _p->be_gso6; }
bool netfront::split_event_channels() const noexcept { return _p->split; }
size_t netfront::max_frame() const noexcept { return _p->be_sg ? netif_max_tx_size : eth_frame_len; }
bool netfront::connected() const noexcept { return _p->is_connected && !_p->is_broken; }
bool netfront::broken() const noexcept { return _p->is_broken; }

std::string netfront::broken_reason() const {
    std::lock_guard g(_p->why_lock);
    return _p->broken_why;
}

// --- TX (netfront_tx.cpp) ------------------------------------------------------

int netfront::send(const void* frame, size_t len, uint32_t queue, const tx_offload* off) noexcept {
    return _p->send(frame, len, queue, off);
}

result<tx_buffer> netfront::tx_reserve(uint32_t queue) noexcept { return _p->tx_reserve(queue); }

int netfront::tx_submit(const tx_buffer& b, size_t len, uint32_t queue, const tx_offload* off) noexcept {
    return _p->tx_submit(b, len, queue, off);
}

int netfront::tx_release(const tx_buffer& b, uint32_t queue) noexcept { return _p->tx_release(b, queue); }

int netfront::tx_submit_granted(hv::gref_t gref, uint16_t offset, size_t len, uint64_t cookie, uint32_t queue,
                                const tx_offload* off) noexcept {
    return _p->tx_submit_granted(gref, offset, len, cookie, queue, off);
}

int netfront::tx_submit_granted_sg(const void* hdr, size_t hdr_len, hv::gref_t gref, uint16_t offset, size_t len,
                                   uint64_t cookie, uint32_t queue, const tx_offload* off) noexcept {
    return _p->tx_submit_granted_sg(hdr, hdr_len, gref, offset, len, cookie, queue, off);
}

uint32_t netfront::tx_reap_granted(tx_done* out, uint32_t max, uint32_t queue) noexcept {
    return _p->tx_reap_granted(out, max, queue);
}
bool netfront::tx_lazy_events(bool lazy, uint32_t queue) noexcept { return _p->tx_lazy_events(lazy, queue); }

// --- RX (netfront_rx.cpp) ------------------------------------------------------

result<size_t> netfront::recv(void* buf, size_t cap, uint32_t queue, rx_info* info) noexcept {
    if (!buf && cap) return err(-EINVAL);
    return _p->recv(buf, cap, queue, info, nullptr, nullptr);
}

result<size_t> netfront::recv_view(rx_view_fn fn, void* arg, uint32_t queue, rx_info* info) noexcept {
    if (!fn) return err(-EINVAL);
    return _p->recv(nullptr, 0, queue, info, fn, arg);
}

// --- events and state (netfront_bus.cpp) ---------------------------------------

int netfront::event_fd(uint32_t queue) const noexcept {
    if (queue >= _p->qs.size() || !_p->qs[queue]->ev) return -1;
    return _p->qs[queue]->ev->fd();
}

int netfront::control_fd() const noexcept { return _p->xs->fileno(); }

int netfront::process_events() noexcept { return _p->process_events(); }

int netfront::wait(int timeout_ms) noexcept {
    std::vector<pollfd> fds;
    fds.push_back({_p->xs->fileno(), POLLIN, 0});
    for (uint32_t i = 0; i < _p->qs.size(); i++)
        if (int fd = event_fd(i); fd >= 0) fds.push_back({fd, POLLIN, 0});
    int n = ::poll(fds.data(), nfds_t(fds.size()), timeout_ms);
    if (n < 0) return -errno;
    if (n == 0) return 0;
    return process_events();
}

int netfront::disconnect() noexcept { return _p->disconnect(); }

// --- stats ---------------------------------------------------------------------

// The TX side and the RX side keep their own counters under their own lock.
queue_stats netfront::stats(uint32_t queue) const noexcept {
    queue_stats s;
    if (queue >= _p->qs.size()) return s;
    const nf_queue& q = *_p->qs[queue];
    {
        std::lock_guard g(q.tx_lock);
        s += q.st_tx;
    }
    {
        std::lock_guard g(q.rx_lock);
        s += q.st_rx;
    }
    return s;
}

hv::op_counters netfront::grant_counters() const noexcept { return _p->gs->counters(); }

} // namespace zc::link
