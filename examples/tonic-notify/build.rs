fn main() -> Result<(), Box<dyn std::error::Error>> {
    let descriptors = protox::compile(["proto/notify.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto/notify.proto");
    Ok(())
}
