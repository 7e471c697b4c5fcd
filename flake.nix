{
  description = "mcq: a persistent message queue that speaks the memcache text protocol";

  # `nix develop` gives the pinned Rust toolchain and every peer the tests and
  # benchmarks use; `nix build` builds mcqd and mcq-loadgen.
  # Pin these inputs with `nix flake lock` (flake.lock is committed once a
  # machine with access to the Nix binary cache has produced it).
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";
    flake-utils.url = "github:numtide/flake-utils";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, flake-utils, rust-overlay }:
    # glommio needs io_uring: Linux only.
    flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system:
      let
        pkgs = import nixpkgs {
          inherit system;
          overlays = [ (import rust-overlay) ];
        };
        # The toolchain CI uses; keep in step with README.md.
        rust = pkgs.rust-bin.stable."1.95.0".default.override {
          extensions = [ "rust-src" "rustfmt" "clippy" ];
        };
        rustPlatform = pkgs.makeRustPlatform {
          cargo = rust;
          rustc = rust;
        };
        # Third-party clients the end-to-end tests drive.
        php = pkgs.php.withExtensions ({ enabled, all }: enabled ++ [ all.memcache ]);
        python = pkgs.python3.withPackages (ps: [ ps.pymemcache ps.prometheus-client ]);
        cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);
      in
      {
        packages.default = rustPlatform.buildRustPackage {
          pname = "mcq";
          version = cargoToml.workspace.package.version;
          src = pkgs.lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = [ "-p" "mcqd" "-p" "mcq-loadgen" ];
          # The end-to-end tests start servers on loopback ports and need a
          # real disk for O_DIRECT; the Nix build sandbox offers neither
          # reliably. Run scripts/test inside `nix develop` instead.
          doCheck = false;
          meta = {
            description = "Persistent message queue speaking the memcache text protocol";
            mainProgram = "mcqd";
            platforms = pkgs.lib.platforms.linux;
          };
        };

        devShells.default = pkgs.mkShell {
          packages = [
            rust
            pkgs.cargo-nextest
            pkgs.memcached # the speed reference
            pkgs.libmemcached # memcat/memcp and friends
            pkgs.twemproxy # nutcracker, several mcqd behind one address
            pkgs.netcat-openbsd
            pkgs.systemd # systemd-analyze, for tests/tests/deploy.rs
            pkgs.cargo-deb # the Debian packages (tests/tests/deploy.rs)
            pkgs.dpkg # dpkg-deb, to check them
            pkgs.openssl # test certificates (tests/tests/tls.rs)
            pkgs.stunnel # a client without TLS through it (tests/tests/tls.rs)
            php
            python
            pkgs.hyperfine
            pkgs.jq
          ];
          shellHook = ''
            echo "mcq dev shell: $(rustc --version)"
          '';
        };
      });
}
