// The command line of the rfr-deploy C++ samples:
//
//   PROGRAM MODEL INPUT OUTPUT [--sigma S] [--raw HxWxC] [options of the program]
//   PROGRAM -h | --help
//
// Options may come before, between or after the three operands; every option takes one value. A program
// with options of its own (rfr_denoise_cpu's --threads) handles them through an OptionHandler.
#pragma once

#include <functional>
#include <string>

namespace rfr {

struct Arguments {
    std::string model;
    std::string input;
    std::string output;
    double sigma = -1.0;  // grey levels; below 0 when not given (the level stored at export)
    int raw_height = 0;   // --raw HxWxC; 0 when not given
    int raw_width = 0;
    int raw_channels = 0;
    bool help = false;  // -h or --help: print the usage, exit 0
};

// Called, in command-line order, with an option other than --sigma and --raw and its value; returns false
// for an option the program does not take.
using OptionHandler = std::function<bool(const std::string& option, const char* value)>;

// Fills `args` from argv. Returns false when the command line does not fit (the caller prints its usage):
// other than three operands, an unknown option, or an option without its value. Throws std::exception on a
// malformed number or size (and whatever `more` throws).
bool parse_arguments(int argc, char** argv, Arguments& args, const OptionHandler& more = nullptr);

}  // namespace rfr
