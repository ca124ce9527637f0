//! Test plugin: the naming hook reports what the sandbox gives it, as a
//! Secret name built from the clocks, the random sources, the environment,
//! the arguments, the preopened directories and the socket interfaces.
//!
//! The answer is dot-separated parts (each a DNS-1123 label):
//!
//! - `w<secs>-<nanos>`: `SystemTime::now()` since the Unix epoch (std, which
//!   reads `wasi:clocks/wall-clock`), then `wall-clock.now` read directly;
//! - `m<ns>-e<ns>`: `wasi:clocks/monotonic-clock.now`, and the `Instant`
//!   elapsed between two std reads around some work;
//! - `r<hex>`: 8 bytes of `wasi:random/random.get-random-bytes`;
//! - `i<hex>`: `wasi:random/insecure.get-insecure-random-u64`;
//! - `s<hex>-<hex>`: `wasi:random/insecure-seed.insecure-seed`;
//! - `h<hex>`: a std `HashMap` hasher's output (its keys come from WASI random);
//! - `v<n>-a<n>-c<0|1>-d<n>`: environment variables (std and direct, summed),
//!   arguments, whether there is an initial cwd, preopened directories;
//! - `t<0|1>-u<0|1>-l<0|1>`: whether creating a TCP socket, a UDP socket and
//!   resolving `localhost` were refused (1 = refused).

wit_bindgen::generate!({ path: "../../../wit", world: "naming-policy" });

use std::fmt::Write as _;
use std::hash::BuildHasher as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use exports::ecr_token_refresh::policy::{naming, settings};
use wasip2::sockets::network::IpAddressFamily;

struct Plugin;

impl settings::Guest for Plugin {
    fn validate_settings(_settings: String) -> Result<(), String> {
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn probe() -> String {
    let std_wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let direct_wall = wasip2::clocks::wall_clock::now();
    let mono = wasip2::clocks::monotonic_clock::now();
    let started = Instant::now();
    let mut spin = 0u64;
    for i in 0..10_000u64 {
        spin = spin.wrapping_mul(31).wrapping_add(i);
    }
    std::hint::black_box(spin);
    let elapsed = started.elapsed().as_nanos();

    let secure = wasip2::random::random::get_random_bytes(8);
    let insecure = wasip2::random::insecure::get_insecure_random_u64();
    let (seed_hi, seed_lo) = wasip2::random::insecure_seed::insecure_seed();
    let hashed = std::collections::hash_map::RandomState::new().hash_one(42u64);

    let env = std::env::vars_os().count() + wasip2::cli::environment::get_environment().len();
    let args = wasip2::cli::environment::get_arguments().len() + std::env::args_os().count();
    let cwd = u8::from(wasip2::cli::environment::initial_cwd().is_some());
    let dirs = wasip2::filesystem::preopens::get_directories().len();

    let tcp_refused = u8::from(
        wasip2::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4).is_err(),
    );
    let udp_refused = u8::from(
        wasip2::sockets::udp_create_socket::create_udp_socket(IpAddressFamily::Ipv4).is_err(),
    );
    let network = wasip2::sockets::instance_network::instance_network();
    let lookup_refused = u8::from(
        wasip2::sockets::ip_name_lookup::resolve_addresses(&network, "localhost").is_err(),
    );

    format!(
        "w{}-{}-{}-{}.m{mono}-e{elapsed}.r{}.i{insecure:016x}.s{seed_hi:016x}-{seed_lo:016x}.h{hashed:016x}.v{env}-a{args}-c{cwd}-d{dirs}.t{tcp_refused}-u{udp_refused}-l{lookup_refused}",
        std_wall.as_secs(),
        std_wall.subsec_nanos(),
        direct_wall.seconds,
        direct_wall.nanoseconds,
        hex(&secure),
    )
}

impl naming::Guest for Plugin {
    fn secret_name(_: String, _: naming::CrInfo, _: String) -> Result<String, String> {
        Ok(probe())
    }
}

export!(Plugin);
