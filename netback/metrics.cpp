// SPDX-License-Identifier: MIT
// The Prometheus text exposition of zc-netback's counters: netback/metrics.hpp.
#include "netback/metrics.hpp"

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/prometheus.hpp"

namespace zc::netback {
namespace {

using prom::family;
using prom::label_value;
using prom::sample;

std::string vif_labels(hv::domid_t frontend, uint32_t devid) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "vif=\"dom%u/%u\",frontend=\"%u\",devid=\"%u\"", unsigned(frontend), devid,
                  unsigned(frontend), devid);
    return buf;
}
std::string vif_labels(const vif_info& v) { return vif_labels(v.frontend, v.devid); }

// The batch histogram's buckets (netback/counters.hpp): 1, 2-3, 4-7, ...,
// 128+.
std::string batch_bucket(unsigned i) {
    if (i == 0) return "1";
    if (i + 1 == batch_hist_buckets) return std::to_string(1u << i) + "+";
    return std::to_string(1u << i) + "-" + std::to_string((2u << i) - 1);
}

} // namespace

std::string prometheus_text(const std::vector<vif_info>& vifs, const std::vector<device_info>& devices,
                            const std::vector<uplink_info>& uplinks) {
    std::string out;
    family(out, "zcnet_netback_vifs", "gauge", "vifs the data path serves");
    sample(out, "zcnet_netback_vifs", "", vifs.size());

    // One line per vif with what is not a counter, as labels (the
    // node_exporter *_info convention), and its state as gauges.
    family(out, "zcnet_netback_vif_info", "gauge", "a vif served by zc-netback (value 1), its MAC as a label");
    for (auto& v : vifs) sample(out, "zcnet_netback_vif_info", vif_labels(v) + ",mac=\"" + label_value(to_string(v.mac)) + "\"", 1);
    family(out, "zcnet_netback_vif_queues", "gauge", "queues (ring pairs) the frontend connected");
    for (auto& v : vifs) sample(out, "zcnet_netback_vif_queues", vif_labels(v), v.queues);
    family(out, "zcnet_netback_vif_disabled", "gauge",
           "1 when the vif was disabled for a protocol violation (reason in `zc-netback stats`)");
    for (auto& v : vifs) sample(out, "zcnet_netback_vif_disabled", vif_labels(v), v.disabled ? 1 : 0);
    family(out, "zcnet_netback_vif_rx_stalled", "gauge", "1 while some queue's RX is stalled (Linux: carrier off)");
    for (auto& v : vifs) sample(out, "zcnet_netback_vif_rx_stalled", vif_labels(v), v.rx_stalled ? 1 : 0);
    family(out, "zcnet_netback_vif_bounce_src_bytes", "gauge",
           "bounce-pool bytes held now for frames this vif sent (its sender quota)");
    for (auto& v : vifs) sample(out, "zcnet_netback_vif_bounce_src_bytes", vif_labels(v), v.bounce_src_bytes);
    family(out, "zcnet_netback_vif_bounce_dst_bytes", "gauge",
           "bounce-pool bytes held now for frames waiting for this vif (its receiver quota)");
    for (auto& v : vifs) sample(out, "zcnet_netback_vif_bounce_dst_bytes", vif_labels(v), v.bounce_dst_bytes);
    family(out, "zcnet_netback_vif_direct_outstanding", "gauge",
           "direct path: descriptors given to this vif that it has not released yet (the senders' requests held)");
    for (auto& v : vifs) sample(out, "zcnet_netback_vif_direct_outstanding", vif_labels(v), v.direct_outstanding);

    // Per queue: where each queue stands now (gauges).
    struct qgauge {
        const char* name;
        const char* help;
        uint64_t (*get)(const queue_info&);
    };
    static constexpr qgauge qgauges[] = {
        {"tx_unconsumed", "TX requests the frontend posted that zc-netback has not read yet",
         [](const queue_info& q) -> uint64_t { return q.tx_unconsumed; }},
        {"tx_in_flight", "TX slots read whose responses are not sent yet",
         [](const queue_info& q) -> uint64_t { return q.tx_in_flight; }},
        {"rx_posted", "RX buffers the frontend posted, not yet filled",
         [](const queue_info& q) -> uint64_t { return q.rx_posted; }},
        {"held_frames", "frames waiting for this queue's RX buffers",
         [](const queue_info& q) -> uint64_t { return q.held_frames; }},
        {"held_bytes", "bytes of those frames", [](const queue_info& q) -> uint64_t { return q.held_bytes; }},
        {"stalled", "1 while the queue's RX is stalled (XSA-392)",
         [](const queue_info& q) -> uint64_t { return q.stalled ? 1 : 0; }},
    };
    for (const qgauge& g : qgauges) {
        std::string name = std::string("zcnet_netback_queue_") + g.name;
        family(out, name, "gauge", g.help);
        for (auto& v : vifs)
            for (auto& q : v.queue_state)
                sample(out, name,
                       vif_labels(v) + ",queue=\"" + std::to_string(q.index) + "\",worker=\"" +
                           std::to_string(q.worker) + "\"",
                       g.get(q));
    }

    // Every counter of the schema, in its order.
    for (size_t k = 0; k < vif_stats::schema_size; k++) {
        const counter_desc& c = vif_stats::schema[k];
        std::string name = std::string("zcnet_netback_") + c.name + "_total";
        prom::counter_family(out, name, c);
        for (auto& v : vifs) sample(out, name, vif_labels(v), v.stats.field(k));
    }
    family(out, "zcnet_netback_tx_batches_total", "counter",
           "TX ring batches by size (requests taken in one pass over the ring)");
    for (auto& v : vifs)
        for (unsigned i = 0; i < batch_hist_buckets; i++)
            sample(out, "zcnet_netback_tx_batches_total", vif_labels(v) + ",size=\"" + batch_bucket(i) + "\"",
                   v.stats.batch_hist[i]);

    // The xenbus state of every device the control plane knows, served or
    // not (a vif that never connected shows here only).
    family(out, "zcnet_netback_device_backend_state", "gauge", "XenbusState zc-netback published (xen/io/xenbus.h)");
    for (auto& d : devices)
        sample(out, "zcnet_netback_device_backend_state", vif_labels(d.frontend, d.devid),
               uint64_t(d.backend_state < 0 ? 0 : d.backend_state));
    family(out, "zcnet_netback_device_frontend_state", "gauge", "XenbusState the frontend last published");
    for (auto& d : devices)
        sample(out, "zcnet_netback_device_frontend_state", vif_labels(d.frontend, d.devid),
               uint64_t(d.frontend_state < 0 ? 0 : d.frontend_state));

    // Uplinks: the interface name is the operator's (a command-line
    // option), escaped all the same.
    auto up_labels = [](const uplink_info& u) { return "uplink=\"" + label_value(u.ifname) + "\""; };
    family(out, "zcnet_netback_uplink_info", "gauge", "an AF_XDP uplink (value 1): XDP mode obtained, MAC, MTU");
    for (auto& u : uplinks)
        sample(out, "zcnet_netback_uplink_info",
               up_labels(u) + ",mode=\"" + label_value(u.mode) + "\",mac=\"" + label_value(to_string(u.mac)) +
                   "\",mtu=\"" + std::to_string(u.mtu) + "\"",
               1);
    for (size_t k = 0; k < uplink_stats::schema_size; k++) {
        const counter_desc& c = uplink_stats::schema[k];
        std::string name = std::string("zcnet_netback_uplink_") + c.name + "_total";
        prom::counter_family(out, name, c);
        for (auto& u : uplinks) sample(out, name, up_labels(u), u.stats.field(k));
    }
    struct extra {
        const char* name;
        const char* help;
        uint64_t uplink_info::*field;
    };
    static constexpr extra extras[] = {
        {"xdp_redirected", "frames the XDP program redirected to the AF_XDP socket", &uplink_info::xdp_redirected},
        {"xdp_passed", "frames the XDP program passed to the kernel (the host's own MAC)", &uplink_info::xdp_passed},
        {"xdp_runts", "dropped frames: the XDP program saw less than an Ethernet header", &uplink_info::xdp_runts},
        {"fill_starved", "times the fill ring had no free UMEM frame to give the kernel", &uplink_info::fill_starved},
        {"tx_wakeups", "sendto() kicks of the AF_XDP TX ring (need_wakeup)", &uplink_info::tx_wakeups},
        {"rx_wakeups", "wake-ups of the AF_XDP receive thread", &uplink_info::rx_wakeups},
    };
    for (const extra& e : extras) {
        std::string name = std::string("zcnet_netback_uplink_") + e.name + "_total";
        family(out, name, "counter", e.help);
        for (auto& u : uplinks) sample(out, name, up_labels(u), u.*e.field);
    }
    return out;
}

int write_file_atomic(const std::string& path, const std::string& text) noexcept {
    std::string tmp = path + ".tmp." + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    // Readable by the collector (node_exporter runs as its own user)
    // whatever the daemon's umask (zc-netback.service sets 0077): counters
    // are not secret.
    (void)::fchmod(fd, 0644);
    size_t off = 0;
    while (off < text.size()) {
        ssize_t w = ::write(fd, text.data() + off, text.size() - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            ::close(fd);
            ::unlink(tmp.c_str());
            return -e;
        }
        off += size_t(w);
    }
    if (::close(fd) < 0 || ::rename(tmp.c_str(), path.c_str()) < 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        return -e;
    }
    return 0;
}

} // namespace zc::netback
