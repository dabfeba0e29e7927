#pragma once

// Reading a SQLite write-ahead log's own structure before SQLite opens it (the file format:
// https://www.sqlite.org/fileformat2.html#the_write_ahead_log). SQLite treats a WAL whose header
// or frames do not check as one that ends there: at the header, as no WAL; at a frame, as a WAL
// that ends before it. That is right for the torn end a crash leaves, and silently loses what is
// stored when the damage is anything else. Pure file reading: nothing is written.

#include <cstdint>
#include <filesystem>
#include <string>

namespace knflow::store {

struct WalCheck {
  enum class State {
    absent,         // no file, too short for a frame (a header and less than 536 bytes), or
                    // zeros throughout (a power loss kept its size and none of its writes)
    sound,          // every frame of the current log checks (the last ones may be torn off)
    bad_header,     // frames follow a header that is not a WAL header or fails its checksum
    damaged_frame,  // a frame fails its checksum, and a commit of the same log comes after it
  };
  State state = State::absent;
  std::uint64_t bytes = 0;       // the file's size
  std::uint64_t bad_offset = 0;  // damaged_frame: where the first failing frame starts
};

// Reads the WAL at `wal` a frame at a time (once, at start).
// Throws std::system_error when the file exists and cannot be read.
WalCheck check_wal_file(const std::filesystem::path& wal);

}  // namespace knflow::store
