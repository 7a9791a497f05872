//! Generates the wire types and service stubs with protox, a protobuf compiler in Rust, so a
//! build needs no system `protoc`. The Prometheus remote-write files declare messages only, so
//! no service code is generated for them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/raft.proto",
        "proto/api.proto",
        "proto/prompb/remote.proto",
        "proto/prompb/types.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto/"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
