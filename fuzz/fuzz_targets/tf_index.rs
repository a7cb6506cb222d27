//! TensorFlow bundles (checkpoints, SavedModel variables): the index (a LevelDB table) and
//! one data shard, given as one input: the index up to and including the table magic that
//! ends it, then the shard. A seed is `cat ckpt.index ckpt.data-00000-of-00001`.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The last 8 bytes of a LevelDB table, `kTableMagicNumber` little-endian.
const TABLE_MAGIC: [u8; 8] = 0xdb47_7524_8b80_fb57u64.to_le_bytes();

fuzz_target!(|data: &[u8]| {
    let split = data
        .windows(TABLE_MAGIC.len())
        .position(|w| w == TABLE_MAGIC)
        .map_or(data.len(), |i| i + TABLE_MAGIC.len());
    let (index, shard) = data.split_at(split);
    let dir = infer_fuzz::scratch_dir("tf");
    std::fs::write(dir.join("ckpt.index"), index).expect("the scratch dir is writable");
    std::fs::write(dir.join("ckpt.data-00000-of-00001"), shard)
        .expect("the scratch dir is writable");
    // A checkpoint is named by its prefix (`ckpt` for `ckpt.index`).
    let _ = infer::weights::load_weights(&dir.join("ckpt"));
});
