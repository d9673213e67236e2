// SPDX-License-Identifier: MIT
// zc-vmbench's uplink mode's veth pair (kernel_path.hpp, uplink_veth): the
// kernel path's pair and UDP receiver with the near end left to an AF_XDP
// uplink and an outside sender.
#include "bench/kernel_path_impl.hpp"

#include <cstring>

#include "common/clock.hpp"

namespace zc::bench {

using namespace detail;

void write_udp_payload(uint8_t* p, size_t len, uint64_t seq, bool end) noexcept {
    const uint32_t kind = end ? tag_end : tag_data;
    memcpy(p, &seq, 8);
    memcpy(p + 8, &kind, 4);
    for (size_t j = hdr_size; j < len; ++j) p[j] = uint8_t((seq & 0xff) + j);
}

// Locally administered, fixed: the guests address the far end without ARP.
constexpr const char* uplink_far_mac = "02:7a:63:75:70:02";

struct uplink_veth::impl {
    netns_pair ns;
    buffers b;
};

uplink_veth::uplink_veth() : _p(std::make_unique<impl>()) {}

uplink_veth::~uplink_veth() {
    std::lock_guard lk(g_run_mutex);
    _p.reset(); // ip netns del, both sides
}

result<std::unique_ptr<uplink_veth>> uplink_veth::create(uint32_t mtu, std::string* why) {
    std::string dummy;
    if (!why) why = &dummy;
    if (int rc = precheck(why); rc < 0) return err(rc);
    std::unique_ptr<uplink_veth> u(new uplink_veth);
    std::lock_guard lk(g_run_mutex);
    netns_config c;
    c.mtu = mtu;
    c.near_addr = false;
    c.far_mac = uplink_far_mac;
    if (int rc = u->_p->ns.setup(why, c); rc < 0) return err(rc);
    buffers& b = u->_p->b;
    b.pattern.resize(256 + rx_slot + 256);
    for (size_t i = 0; i < b.pattern.size(); ++i) b.pattern[i] = uint8_t(i);
    b.rx.resize(size_t(batch) * rx_slot);
    b.msgs.resize(batch);
    b.iovs.resize(size_t(batch) * 2);
    return u;
}

std::vector<std::string> uplink_veth::near_exec() const { return {ip_binary(), "netns", "exec", near_netns()}; }
std::string uplink_veth::near_netns() const { return _p->ns.name(0); }
const char* uplink_veth::ifname() noexcept { return veth_name; }
std::string uplink_veth::far_ip() const { return _p->ns.addr(2); }
std::string uplink_veth::guest_ip(unsigned i) const { return _p->ns.addr(int(10 + i % 200)); }
const char* uplink_veth::far_mac() noexcept { return uplink_far_mac; }
uint16_t uplink_veth::port() noexcept { return udp_port; }
void uplink_veth::track(pid_t pid) noexcept { register_pid(pid); }
void uplink_veth::untrack(pid_t pid) noexcept { unregister_pid(pid); }

void uplink_veth::announce() {
    std::lock_guard lk(g_run_mutex);
    const pid_t me = getpid();
    const sockaddr_in to = make_addr(guest_ip(0), 9);
    const int ns_fd = _p->ns.fd(1);
    child c;
    int rc = spawn(c, [&](int wfd) {
        report r;
        child_enter(ns_fd, me, wfd, r);
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s < 0) child_fail(wfd, r, "socket");
        const char byte = 0;
        sendto(s, &byte, 1, 0, reinterpret_cast<const sockaddr*>(&to), sizeof to); // queued behind the ARP request
        send_report(wfd, r, 2);
        _exit(0);
    });
    report r;
    if (rc == 0) c.reap(!read_report(c.rfd, r, 5'000));
}

kernel_result uplink_veth::receive_udp(size_t frame, double seconds, const sender& send) {
    kernel_result r;
    r.proto = "udp";
    r.frame = frame;
    r.payload = udp_payload_for_frame(frame, &r.capped);
    if (r.payload == 0) {
        r.error = "frame below " + std::to_string(eth_ip_udp_overhead + min_udp_payload) + " bytes";
        return r;
    }
    r.wire_frame = r.payload + eth_ip_udp_overhead;
    std::lock_guard lk(g_run_mutex);
    const pid_t me = getpid();
    const int64_t hard_deadline = mono_ns() + int64_t((seconds + 20) * 1e9);
    const sockaddr_in rx_addr = make_addr(far_ip(), udp_port);
    netns_pair& ns = _p->ns;
    buffers& b = _p->b;
    child rx;
    int rc = spawn(rx, [&](int wfd) { udp_receiver(ns.fd(1), me, wfd, rx_addr, r.payload, hard_deadline, b); });
    if (rc < 0) {
        r.error = std::string("fork receiver: ") + strerror(-rc);
        return r;
    }
    report rr;
    if (!read_report(rx.rfd, rr, 10'000) || rr.phase != 1) {
        r.error = rr.what[0] ? std::string("receiver: ") + rr.what : "receiver did not start";
        return r;
    }
    const int64_t t0 = mono_ns();
    std::string why;
    const bool sent_ok = send(&r.frames_sent, &why);
    const int64_t t1 = mono_ns();
    const bool rx_ok = read_report(rx.rfd, rr, sent_ok ? 15'000 : 0);
    rx.reap(!rx_ok);
    r.cpu_rx_seconds = r.cpu_seconds = cpu_of(rx.ru);
    r.bytes_sent = r.frames_sent * r.payload;
    if (!sent_ok) r.error = "sender: " + why;
    else if (!rx_ok) r.error = "receiver did not report (timed out or died)";
    else if (rr.err) r.error = std::string("receiver: ") + rr.what;
    set_rates(r, proto::udp, r.payload, rr, t1 - t0);
    return r;
}

} // namespace zc::bench
