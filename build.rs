fn main() {
    gst_plugin_version_helper::info();
    // torch-sys has `links = "tch"` and exports its libtorch lib dir; an rpath to it lets
    // gst-launch-1.0 load the plugin without LD_LIBRARY_PATH.
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
