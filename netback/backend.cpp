// SPDX-License-Identifier: MIT
#include "netback/backend.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

extern "C" {
#include <xen/io/xenbus.h>
}

#include "common/log.hpp"
#include "netback/backend_device.hpp"
#include "netback/source_check.hpp"
#include "netback/toolstack.hpp"
#include "ring/zc_direct.hpp"

namespace zc::netback {

namespace {
constexpr const char* tag = "netback";
constexpr const char* tok_backend = "be";
constexpr const char* tok_release = "rel";
constexpr const char* tok_frontend = "fe:"; // + "<fe>/<devid>"
// backend/error and zc-disabled: bounded, whatever the frontend wrote.
constexpr size_t max_error_len = 256;

const char* state_name(int s) {
    static const char* names[] = {"Unknown", "Initialising", "InitWait", "Initialised", "Connected",
                                  "Closing", "Closed", "Reconfiguring", "Reconfigured"};
    return s >= 0 && s <= 8 ? names[s] : "invalid";
}

// connect_data_rings() of Linux netback: one queue's ring references and
// event channel(s) under `fe`/`dir` ("" or "queue-N/").
int read_queue_keys(hv::xs& xs, const std::string& fe, const std::string& dir, bool split_ok, queue_params& qp,
                    std::string* why) {
    auto rd = [&](const std::string& k) { return xs.read(fe + "/" + dir + k); };
    uint32_t v = 0;
    auto tx = rd("tx-ring-ref"), rx = rd("rx-ring-ref");
    if (!tx || !rx || !parse_u32(*tx, v)) {
        *why = "reading " + fe + "/" + dir + "tx-ring-ref and rx-ring-ref";
        return -EINVAL;
    }
    qp.tx_ring_ref = v;
    if (!parse_u32(*rx, v)) {
        *why = "bad " + dir + "rx-ring-ref";
        return -EINVAL;
    }
    qp.rx_ring_ref = v;
    if (auto ev = rd("event-channel")) {
        if (!parse_u32(*ev, v)) {
            *why = "bad " + dir + "event-channel";
            return -EINVAL;
        }
        qp.tx_evtchn = qp.rx_evtchn = v;
        return 0;
    }
    auto et = rd("event-channel-tx"), er = rd("event-channel-rx");
    uint32_t a = 0, b = 0;
    if (!et || !er || !parse_u32(*et, a) || !parse_u32(*er, b)) {
        *why = "reading " + fe + "/" + dir + "event-channel(-tx/-rx)";
        return -EINVAL;
    }
    if (!split_ok && a != b) {
        *why = "split event channels were not offered";
        return -EINVAL;
    }
    qp.tx_evtchn = a;
    qp.rx_evtchn = b;
    return 0;
}

} // namespace


result<std::unique_ptr<backend>> backend::create(hv::port& port, const backend_options& o, std::string* why) noexcept {
    if (o.max_queues == 0 || o.max_queues > 64) {
        if (why) *why = "max-queues must be 1..64";
        return err(-EINVAL);
    }
    std::unique_ptr<backend> b(new backend());
    b->_port = &port;
    b->_opts = o;
    auto x = hv::xs::open(port.xenstore_path());
    if (!x) {
        if (why) *why = std::string("cannot open xenstore: ") + std::strerror(-x.error());
        return err(x.error());
    }
    b->_xs = std::move(*x);
    backend* self = b.get();
    auto dp = datapath::create(
        port, o.dp,
        [self](hv::domid_t fe, uint32_t devid, const std::string& reason) {
            // Called from a data-path worker: hand it to the control thread.
            std::lock_guard<std::mutex> g(self->_fatal_lock);
            self->_fatals.emplace_back(std::to_string(fe) + "/" + std::to_string(devid), reason);
            uint64_t one = 1;
            (void)!::write(self->_event_fd, &one, sizeof one);
        },
        why);
    if (!dp) return err(dp.error());
    b->_dp = std::move(*dp);
    b->_base = "/local/domain/" + std::to_string(port.self()) + "/backend/vif";
    b->_event_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (b->_event_fd < 0) return err(-errno);
    // One fd for the caller to poll: xenstore events and data-path fatals.
    b->_epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (b->_epoll_fd < 0) return err(-errno);
    for (int f : {b->_xs->fileno(), b->_event_fd}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = f;
        ::epoll_ctl(b->_epoll_fd, EPOLL_CTL_ADD, f, &ev);
    }
    int rc = b->_xs->watch(b->_base, tok_backend);
    if (rc == 0) rc = b->_xs->watch("@releaseDomain", tok_release);
    if (rc < 0) {
        if (why) *why = std::string("xenstore watch: ") + std::strerror(-rc);
        return err(rc);
    }
    ZC_LOG(info, tag, "dom%u: serving %s (max %u queues, split event channels %s, %u workers)",
           unsigned(port.self()), b->_base.c_str(), o.max_queues, o.split_event_channels ? "on" : "off",
           o.dp.workers);
    return b;
}

backend::~backend() {
    for (auto& [k, d] : _devices)
        if (d->vif_added) _dp->remove_vif(d->frontend, d->devid);
    _dp.reset();
    if (_event_fd >= 0) ::close(_event_fd);
    if (_epoll_fd >= 0) ::close(_epoll_fd);
}

int backend::fd() const noexcept { return _epoll_fd; }

int backend::process() noexcept {
    int n = 0;
    for (;;) {
        auto ev = _xs->read_watch();
        if (!ev) break;
        n++;
        if (ev->token == tok_backend) on_backend_path(ev->path);
        else if (ev->token == tok_release) on_release_domain();
        else if (ev->token.rfind(tok_frontend, 0) == 0) on_frontend_state(ev->token.substr(3));
    }
    uint64_t cnt;
    if (::read(_event_fd, &cnt, sizeof cnt) == sizeof cnt) {
        handle_fatals();
        n++;
    }
    return n;
}

void backend::handle_fatals() noexcept {
    std::vector<std::pair<std::string, std::string>> f;
    {
        std::lock_guard<std::mutex> g(_fatal_lock);
        f.swap(_fatals);
    }
    for (auto& [key, reason] : f) {
        auto it = _devices.find(key);
        if (it == _devices.end()) continue;
        // As xenvif_fatal_tx_err(): the vif stops, the xenbus state stays;
        // the guest has to reconnect. The reason is also left in xenstore
        // for the operator.
        device& d = *it->second;
        d.last_error = log::sanitize(reason, max_error_len);
        _xs->write(d.be_path + "/zc-disabled", d.last_error);
        DEV_LOG(d, warn, "vif %s disabled: %s", key.c_str(), d.last_error.c_str());
    }
}

// A change somewhere below backend/vif: a device appeared (the toolstack
// created it) or went away.
void backend::on_backend_path(const std::string& path) noexcept {
    if (path.size() <= _base.size() + 1 || path.compare(0, _base.size(), _base) != 0) {
        // The watch's first firing, or the whole tree: rescan.
        auto fes = _xs->directory(_base);
        if (!fes) return;
        for (auto& fe : *fes) {
            auto devs = _xs->directory(_base + "/" + fe);
            if (!devs) continue;
            for (auto& dv : *devs) on_backend_path(_base + "/" + fe + "/" + dv);
        }
        return;
    }
    std::string rest = path.substr(_base.size() + 1); // "<fe>/<devid>[/key...]"
    size_t s1 = rest.find('/');
    if (s1 == std::string::npos) {
        // "<fe>" alone: a new or removed frontend directory.
        auto devs = _xs->directory(path);
        if (devs)
            for (auto& dv : *devs) on_backend_path(path + "/" + dv);
        else
            for (auto it = _devices.begin(); it != _devices.end();) {
                auto next = std::next(it);
                if (it->first.rfind(rest + "/", 0) == 0) forget(it->first);
                it = next;
            }
        return;
    }
    size_t s2 = rest.find('/', s1 + 1);
    std::string key = rest.substr(0, s2);
    uint32_t fe = 0, devid = 0;
    if (!parse_u32(rest.substr(0, s1), fe, 0x7fef) || !parse_u32(key.substr(s1 + 1), devid)) return;
    std::string be_path = _base + "/" + key;
    bool exists = bool(_xs->read(be_path + "/frontend"));
    auto it = _devices.find(key);
    if (!exists) {
        if (it != _devices.end() && !_xs->read(be_path)) forget(key);
        return;
    }
    if (it != _devices.end()) return; // our own writes, or toolstack keys: nothing to do
    if (!_xs->read("/local/domain/" + std::to_string(fe) + "/domid")) {
        // The frontend's domain died before we saw its device, so its
        // @releaseDomain has come and gone: clean up now, as the toolstack
        // would, instead of waiting for a frontend that will never come.
        ZC_LOG(info, tag, "vif %s: frontend domain already gone", key.c_str());
        _xs->rm(be_path);
        return;
    }
    auto d = std::make_unique<device>();
    d->key = key;
    d->frontend = hv::domid_t(fe);
    d->devid = devid;
    d->be_path = be_path;
    auto fp = _xs->read(be_path + "/frontend");
    d->fe_path = fp ? *fp : frontend_dir(hv::domid_t(fe), devid);
    device& ref = *d;
    _devices.emplace(key, std::move(d));
    probe(ref);
    _xs->watch(ref.fe_path + "/state", std::string(tok_frontend) + key);
}

// netback_probe(): offer the features, then InitWait.
void backend::probe(device& d) noexcept {
    const std::pair<const char*, std::string> features[] = {
        {"feature-sg", "1"},
        {"feature-gso-tcpv4", "1"},
        {"feature-gso-tcpv6", "1"},
        {"feature-ipv6-csum-offload", "1"},
        {"feature-rx-copy", "1"},
        {"feature-rx-flip", "0"},
        {"feature-multicast-control", "0"},
        {"feature-dynamic-multicast-control", "0"},
        {"feature-split-event-channels", _opts.split_event_channels ? "1" : "0"},
        {"multi-queue-max-queues", std::to_string(_opts.max_queues)},
        {"feature-ctrl-ring", "0"},
        {ring::zc_direct::key_feature, "1"}, // the direct path (backend_direct.cpp)
    };
    for (int attempt = 0; attempt < 16; attempt++) {
        auto t = _xs->transaction_start();
        if (!t) break;
        for (auto& [k, v] : features) _xs->write(d.be_path + "/" + k, v, *t);
        int rc = _xs->transaction_end(*t, false);
        if (rc != -EAGAIN) break;
    }
    // The hotplug script's job on Xen; zc-netback needs no bridge or
    // interface, so it signals the toolstack itself.
    _xs->write(d.be_path + "/hotplug-status", "connected");
    set_state(d, XenbusStateInitWait);
    DEV_LOG(d, info, "vif %s: probed, InitWait", d.key.c_str());
}

void backend::set_state(device& d, int state) noexcept {
    if (d.state == state) return;
    d.state = state;
    _xs->write(d.be_path + "/state", std::to_string(state));
}

void backend::on_frontend_state(const std::string& key) noexcept {
    auto it = _devices.find(key);
    if (it == _devices.end()) return;
    frontend_changed(*it->second);
}

// set_backend_state() of Linux netback: walk from our state to `target`
// one XenbusState at a time, as Linux does (Connected -> Closing -> Closed ->
// InitWait, and so on), writing each step. Connecting is the one step that
// can fail; then the frontend is told with backend/error and Closing.
void backend::set_backend_state(device& d, int target) noexcept {
    for (int guard = 0; d.state != target && guard < 8; ++guard) {
        switch (d.state) {
        case XenbusStateInitialising:
        case XenbusStateUnknown:
            set_state(d, target == XenbusStateClosed ? XenbusStateClosed : XenbusStateInitWait);
            break;
        case XenbusStateClosed:
            if (target == XenbusStateClosing) set_state(d, XenbusStateClosing);
            else probe(d); // features again, then InitWait
            break;
        case XenbusStateInitWait:
            if (target == XenbusStateConnected) {
                std::string why;
                if (int rc = connect(d, &why); rc < 0) {
                    // xenbus_dev_fatal(): log, leave the reason in xenstore, Closing.
                    d.last_error = log::sanitize(why, max_error_len);
                    DEV_LOG(d, warn, "vif %s: connect failed: %s", d.key.c_str(), d.last_error.c_str());
                    _xs->write(d.be_path + "/error", d.last_error);
                    set_state(d, XenbusStateClosing);
                    return;
                }
                set_state(d, XenbusStateConnected);
                DEV_LOG(d, info, "vif %s: Connected", d.key.c_str());
            } else {
                set_state(d, XenbusStateClosing);
            }
            break;
        case XenbusStateConnected:
        case XenbusStateReconfigured:
            if (target == XenbusStateConnected) { // back from Reconfigured
                set_state(d, XenbusStateConnected);
                break;
            }
            // backend_disconnect(): unmap the rings, unbind, then Closing.
            disconnect(d);
            set_state(d, XenbusStateClosing);
            break;
        case XenbusStateClosing:
        default:
            set_state(d, XenbusStateClosed);
            break;
        }
    }
}

// frontend_changed() of Linux netback.
void backend::frontend_changed(device& d) noexcept {
    // xenbus_read_driver_state(): a missing or unparsable value is Unknown.
    auto v = _xs->read(d.fe_path + "/state");
    uint32_t st = XenbusStateUnknown;
    if (!v || !parse_u32(*v, st)) st = XenbusStateUnknown;
    if (int64_t(st) == d.fe_state && st != XenbusStateConnected) return;
    d.fe_state = st <= XenbusStateReconfigured ? int(st) : -1;
    DEV_LOG(d, debug, "vif %s: frontend %s, backend %s", d.key.c_str(), state_name(int(st)), state_name(d.state));
    if (st > XenbusStateReconfigured) {
        // xenbus_dev_fatal(dev, -EINVAL, "saw state %d at frontend").
        d.last_error = "saw state " + std::to_string(st) + " at frontend";
        DEV_LOG(d, warn, "vif %s: %s", d.key.c_str(), d.last_error.c_str());
        _xs->write(d.be_path + "/error", d.last_error);
        set_backend_state(d, XenbusStateClosing);
        return;
    }
    switch (st) {
    case XenbusStateInitialising:
        // Also from Connected: a frontend that restarts (driver reload,
        // xennet's reconnect after resume) gets its old rings unmapped and
        // the next Connected maps the new ones.
        set_backend_state(d, XenbusStateInitWait);
        break;
    case XenbusStateInitialised:
        break;
    case XenbusStateConnected:
        set_backend_state(d, XenbusStateConnected);
        break;
    case XenbusStateReconfiguring:
        // xennet_xdp_set(): the frontend asks for an XDP headroom. We offer
        // no feature-xdp-headroom, so there is nothing to change; answer
        // Reconfigured as Linux does and stay connected.
        if (d.state == XenbusStateConnected) set_state(d, XenbusStateReconfigured);
        break;
    case XenbusStateReconfigured:
        break;
    case XenbusStateClosing:
        set_backend_state(d, XenbusStateClosing);
        break;
    case XenbusStateClosed:
        set_backend_state(d, XenbusStateClosed);
        break;
    case XenbusStateUnknown:
    default:
        // The frontend directory is gone (guest destroyed).
        set_backend_state(d, XenbusStateClosed);
        // If its whole domain is gone, finish the teardown here: the
        // @releaseDomain for it may have been handled before we knew the
        // device. `d` is destroyed by this.
        if (!_xs->read("/local/domain/" + std::to_string(d.frontend) + "/domid")) {
            std::string key = d.key, be = d.be_path;
            DEV_LOG(d, info, "vif %s: frontend domain gone", key.c_str());
            forget(key);
            _xs->rm(be);
        }
        break;
    }
}

// connect() / connect_data_rings() / read_xenbus_vif_flags() of Linux netback.
int backend::connect(device& d, std::string* why) noexcept {
    auto rd = [&](const std::string& k) { return _xs->read(d.fe_path + "/" + k); };
    vif_params p;
    p.frontend = d.frontend;
    p.devid = d.devid;
    auto mac = _xs->read(d.be_path + "/mac");
    if (!mac || !parse_mac(*mac, p.mac, 0)) p.mac = default_mac(d.frontend, d.devid);
    // The toolstack's `ip` and `rate` keys (source_check.hpp).
    if (auto ip = _xs->read(d.be_path + "/ip"); ip && !parse_ipv4_list(*ip, p.ipv4)) {
        *why = "bad ip key '" + *ip + "' (IPv4 addresses separated by spaces)";
        return -EINVAL;
    }
    if (auto r = _xs->read(d.be_path + "/rate"); r && !parse_rate(*r, p.credit_bytes, p.credit_usec))
        ZC_LOG(warn, "netback", "vif %u/%u: bad rate key '%s', running unlimited (Linux xen_net_read_rate)",
               unsigned(d.frontend), d.devid, r->c_str());

    uint32_t nq = 1;
    if (auto v = rd("multi-queue-num-queues")) {
        if (!parse_u32(*v, nq) || nq == 0) {
            *why = "bad multi-queue-num-queues '" + log::sanitize(*v, 16) + "'";
            return -EINVAL;
        }
        if (nq > _opts.max_queues) {
            *why = "guest requested " + std::to_string(nq) + " queues, exceeding the maximum of " +
                   std::to_string(_opts.max_queues);
            return -EINVAL;
        }
    }
    for (uint32_t q = 0; q < nq; q++) {
        queue_params qp;
        const std::string dir = nq == 1 ? "" : "queue-" + std::to_string(q) + "/";
        if (int e = read_queue_keys(*_xs, d.fe_path, dir, _opts.split_event_channels, qp, why); e < 0) return e;
        p.queues.push_back(qp);
    }
    auto flag = [&](const char* k, bool dflt) {
        auto v = rd(k);
        uint32_t x = 0;
        return v ? (parse_u32(*v, x) && x != 0) : dflt;
    };
    if (!flag("request-rx-copy", false)) {
        *why = "frontend does not request rx-copy (flip mode is not supported)";
        return -EOPNOTSUPP;
    }
    p.feature_rx_notify = flag("feature-rx-notify", false);
    p.feature_sg = flag("feature-sg", false);
    p.feature_gso_tcpv4 = flag("feature-gso-tcpv4", false);
    p.feature_gso_tcpv6 = flag("feature-gso-tcpv6", false);
    p.feature_no_csum_offload = flag("feature-no-csum-offload", false);
    p.feature_ipv6_csum_offload = flag("feature-ipv6-csum-offload", false);
    // The toolstack's MTU for the vif (libxl writes "mtu" into the frontend
    // directory, owned by us and read-only to the guest). Absent or out of
    // range: no limit, as before libxl wrote it.
    uint32_t mtu = 0;
    if (auto m = rd("mtu"); m && parse_u32(*m, mtu, 65535) && mtu >= 68) p.mtu = mtu;
    d.mac_configured = mac && parse_mac(*mac, d.mac, 0);
    read_direct_keys(d, p);

    if (d.vif_added) disconnect(d);
    int rc = _dp->add_vif(p, why);
    if (rc < 0) return rc;
    d.vif_added = true;
    d.direct = p.zc_direct;
    d.last_error.clear();
    _xs->rm(d.be_path + "/zc-disabled");
    publish_direct_peers();
    return 0;
}

void backend::disconnect(device& d) noexcept {
    if (!d.vif_added) return;
    _dp->remove_vif(d.frontend, d.devid);
    d.vif_added = false;
    withdraw_direct(d);
    DEV_LOG(d, info, "vif %s: disconnected", d.key.c_str());
}

void backend::forget(const std::string& key) noexcept {
    auto it = _devices.find(key);
    if (it == _devices.end()) return;
    device& d = *it->second;
    disconnect(d);
    _xs->unwatch(d.fe_path + "/state", std::string(tok_frontend) + key);
    DEV_LOG(d, info, "vif %s: removed", key.c_str());
    _devices.erase(it);
}

// A domain died. Devices whose frontend domain is gone are torn down and,
// as libxl does after destroying a domain, their backend directory removed.
void backend::on_release_domain() noexcept {
    std::vector<std::string> dead;
    for (auto& [k, d] : _devices)
        if (!_xs->read("/local/domain/" + std::to_string(d->frontend) + "/domid")) dead.push_back(k);
    for (auto& k : dead) {
        auto it = _devices.find(k);
        std::string be = it->second->be_path;
        ZC_LOG(info, tag, "vif %s: frontend domain gone", k.c_str());
        forget(k);
        _xs->rm(be);
    }
}

bool backend::xenstore_alive() noexcept {
    auto v = _xs->read("/local/domain/" + std::to_string(_port->self()) + "/domid");
    return v || v.error() == -ENOENT || v.error() == -EACCES;
}

std::vector<device_info> backend::devices() const {
    std::vector<device_info> v;
    for (auto& [k, d] : _devices) v.push_back({d->frontend, d->devid, d->state, d->fe_state, d->last_error});
    return v;
}

} // namespace zc::netback
