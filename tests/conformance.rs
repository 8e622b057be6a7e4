//! The engine conformance suite (`tower_sse::testing`) against the
//! in-memory engine, the reference implementation of the contract. The
//! Redis engine runs the same suite in `tests/redis.rs`.

use tower_sse::testing::{Harness, MemoryBackplane};

#[derive(Default)]
struct Memory(MemoryBackplane);

impl Harness for Memory {
    type Backplane = MemoryBackplane;

    async fn connect(&self) -> MemoryBackplane {
        self.0.clone()
    }

    async fn stop(&self) {
        self.0.set_down(true);
    }

    async fn start(&self, keep_data: bool) {
        if !keep_data {
            self.0.lose_data();
        }
        self.0.set_down(false);
    }
}

async fn memory() -> Memory {
    Memory::default()
}

tower_sse::backplane_conformance!(memory);
