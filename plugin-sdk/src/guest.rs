//! The WebAssembly side of the ABI: the host's imports, and what
//! [`crate::export_plugin!`] exports. Used only when compiled for wasm32.

#[cfg(target_arch = "wasm32")]
pub use imp::*;

/// Export a [`crate::Plugin`] type as the module's entry points
/// (`tapstream_abi`, `tapstream_buffer`, `tapstream_init`,
/// `tapstream_batch`, `tapstream_tick`). Does nothing when not compiled for
/// wasm32, so the same crate builds natively for tests.
#[macro_export]
macro_rules! export_plugin {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        mod __tapstream_exports {
            #[allow(unused_imports)]
            use super::*;
            static STATE: $crate::guest::Slot<$t> = $crate::guest::Slot::new();

            #[unsafe(no_mangle)]
            pub extern "C" fn tapstream_abi() -> i32 {
                $crate::ABI_VERSION as i32
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn tapstream_buffer(min: i32) -> i32 {
                $crate::guest::buffer(min)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn tapstream_init() -> i32 {
                $crate::guest::init::<$t>(&STATE)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn tapstream_batch(kind: i32, ptr: i32, count: i32, bytes: i32) -> i32 {
                $crate::guest::batch::<$t>(&STATE, kind, ptr, count, bytes)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn tapstream_tick(now_ns: i64) {
                $crate::guest::tick::<$t>(&STATE, now_ns)
            }
        }
    };
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use core::cell::UnsafeCell;

    use crate::abi::{self, BUFFER_BYTES, alert as al};
    use crate::{AlertFields, Host, Level, Plugin};

    #[link(wasm_import_module = "tapstream")]
    unsafe extern "C" {
        #[link_name = "now_ns"]
        fn ts_now_ns() -> i64;
        #[link_name = "random"]
        fn ts_random(out: *mut u8, len: usize) -> i32;
        #[link_name = "read_file"]
        fn ts_read_file(np: *const u8, nl: usize, out: *mut u8, cap: usize) -> i32;
        #[link_name = "alert"]
        fn ts_alert(ptr: *const u8) -> i32;
        #[link_name = "log"]
        fn ts_log(level: i32, ptr: *const u8, len: usize);
        #[link_name = "config_get"]
        fn ts_config_get(kp: *const u8, kl: usize, out: *mut u8, cap: usize) -> i32;
        #[link_name = "counter_add"]
        fn ts_counter_add(np: *const u8, nl: usize, delta: i64);
        #[link_name = "kv_get"]
        fn ts_kv_get(kp: *const u8, kl: usize, out: *mut u8, cap: usize) -> i32;
        #[link_name = "kv_set"]
        fn ts_kv_set(kp: *const u8, kl: usize, vp: *const u8, vl: usize) -> i32;
        #[link_name = "kv_del"]
        fn ts_kv_del(kp: *const u8, kl: usize);
    }

    /// The plugin's single instance state. WebAssembly modules here run on
    /// one thread, and the host never re-enters an export while another
    /// runs, so there is never a second borrow.
    pub struct Slot<T>(UnsafeCell<Option<T>>);

    // Safety: wasm32 instances are single-threaded (no shared memory, no
    // threads): the value is never reached from two threads.
    unsafe impl<T> Sync for Slot<T> {}

    impl<T> Slot<T> {
        pub const fn new() -> Self {
            Slot(UnsafeCell::new(None))
        }
        #[allow(clippy::mut_from_ref)]
        fn get(&self) -> &mut Option<T> {
            // Safety: single-threaded and not re-entrant (see the type's
            // doc), so this is the only live reference.
            unsafe { &mut *self.0.get() }
        }
    }

    struct Buffer(UnsafeCell<[u8; BUFFER_BYTES]>);
    // Safety: as for `Slot`: one thread, no re-entry.
    unsafe impl Sync for Buffer {}
    static BUFFER: Buffer = Buffer(UnsafeCell::new([0; BUFFER_BYTES]));

    pub fn buffer(min: i32) -> i32 {
        if min < 0 || min as usize > BUFFER_BYTES {
            return 0;
        }
        BUFFER.0.get() as usize as i32
    }

    /// The host's imports as a [`Host`].
    pub struct WasmHost;

    impl Host for WasmHost {
        fn alert(&mut self, a: &AlertFields<'_>) -> Result<(), i32> {
            let mut r = [0u8; al::SIZE];
            abi::put_u32(&mut r, al::SEVERITY, a.severity as u32);
            abi::put_u32(&mut r, al::CATEGORY, a.category as u32);
            abi::put_u32(&mut r, al::VERDICT, a.verdict as u32);
            let s = |r: &mut [u8], f, v: &str| abi::put_str(r, f, v.as_ptr() as usize as u32, v.len() as u32);
            s(&mut r, al::RULE, a.rule);
            s(&mut r, al::GROUP, a.group);
            s(&mut r, al::EXPLANATION, a.explanation);
            s(&mut r, al::SRC_IPS, a.src_ips);
            s(&mut r, al::DST_IPS, a.dst_ips);
            s(&mut r, al::SAMPLE_FLOWS, a.sample_flows);
            s(&mut r, al::RATE_UNIT, a.rate_unit);
            abi::put_u64(&mut r, al::PACKETS, a.packets);
            abi::put_u64(&mut r, al::BYTES, a.bytes);
            abi::put_u64(&mut r, al::FLOWS, a.flows);
            abi::put_f64(&mut r, al::RATE, a.rate);
            for (f, p) in [al::PORT0, al::PORT1, al::PORT2, al::PORT3].into_iter().zip(a.ports) {
                abi::put_u16(&mut r, f, p);
            }
            // Safety: the host reads `al::SIZE` bytes at the pointer and the
            // strings it names, all inside this live stack frame and statics.
            let rc = unsafe { ts_alert(r.as_ptr()) };
            if rc == 0 { Ok(()) } else { Err(rc) }
        }
        fn log(&mut self, level: Level, msg: &str) {
            // Safety: a valid string for the call's duration.
            unsafe { ts_log(level as i32, msg.as_ptr(), msg.len()) }
        }
        fn config<'b>(&mut self, key: &str, buf: &'b mut [u8]) -> Option<&'b str> {
            // Safety: the host writes at most `buf.len()` bytes into `buf`.
            let n = unsafe { ts_config_get(key.as_ptr(), key.len(), buf.as_mut_ptr(), buf.len()) };
            if n < 0 || n as usize > buf.len() {
                return None;
            }
            core::str::from_utf8(&buf[..n as usize]).ok()
        }
        fn counter(&mut self, name: &str, delta: i64) {
            // Safety: a valid string for the call's duration.
            unsafe { ts_counter_add(name.as_ptr(), name.len(), delta) }
        }
        fn kv_get(&mut self, key: &[u8], buf: &mut [u8]) -> Option<usize> {
            // Safety: the host writes at most `buf.len()` bytes into `buf`.
            let n = unsafe { ts_kv_get(key.as_ptr(), key.len(), buf.as_mut_ptr(), buf.len()) };
            if n < 0 || n as usize > buf.len() { None } else { Some(n as usize) }
        }
        fn kv_set(&mut self, key: &[u8], value: &[u8]) -> Result<(), i32> {
            // Safety: valid slices for the call's duration.
            let rc = unsafe { ts_kv_set(key.as_ptr(), key.len(), value.as_ptr(), value.len()) };
            if rc == 0 { Ok(()) } else { Err(rc) }
        }
        fn kv_del(&mut self, key: &[u8]) {
            // Safety: a valid slice for the call's duration.
            unsafe { ts_kv_del(key.as_ptr(), key.len()) }
        }
    }

    /// Wall-clock time, ns. The module then imports `now_ns`: its manifest
    /// must grant `clock`.
    pub fn now_ns() -> u64 {
        // Safety: no arguments.
        unsafe { ts_now_ns() as u64 }
    }

    /// Fill `buf` with random bytes (up to 4096). Needs the `random` grant.
    pub fn random(buf: &mut [u8]) -> bool {
        // Safety: the host writes at most `buf.len()` bytes into `buf`.
        unsafe { ts_random(buf.as_mut_ptr(), buf.len()) >= 0 }
    }

    /// Read a file the manifest lists into `buf`; its length (`Err(len)`
    /// when `buf` is too small; `Err(-4)` not listed or missing). Needs the
    /// `files` grant.
    pub fn read_file(name: &str, buf: &mut [u8]) -> Result<usize, i32> {
        // Safety: the host writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { ts_read_file(name.as_ptr(), name.len(), buf.as_mut_ptr(), buf.len()) };
        if n < 0 || n as usize > buf.len() { Err(n) } else { Ok(n as usize) }
    }

    pub fn init<P: Plugin>(slot: &Slot<P>) -> i32 {
        match P::init(&mut WasmHost) {
            Ok(p) => {
                *slot.get() = Some(p);
                0
            }
            Err(e) => {
                WasmHost.log(Level::Error, e);
                1
            }
        }
    }

    pub fn batch<P: Plugin>(slot: &Slot<P>, kind: i32, ptr: i32, count: i32, bytes: i32) -> i32 {
        let Some(p) = slot.get().as_mut() else { return abi::errno::INVALID };
        let base = BUFFER.0.get() as usize;
        if ptr as usize != base || bytes < 0 || bytes as usize > BUFFER_BYTES || count < 0 {
            return abi::errno::BOUNDS;
        }
        // Safety: the range lies inside BUFFER (checked above), which the
        // host filled before this call and does not touch during it.
        let data = unsafe { core::slice::from_raw_parts(base as *const u8, bytes as usize) };
        crate::dispatch(p, &mut WasmHost, kind as u32, data, count as usize)
    }

    pub fn tick<P: Plugin>(slot: &Slot<P>, now_ns: i64) {
        if let Some(p) = slot.get().as_mut() {
            p.on_tick(&mut WasmHost, now_ns as u64);
        }
    }
}
