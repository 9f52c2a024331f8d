#include "command_line.h"

#include "image_io.h"

#include <vector>

namespace rfr {

bool parse_arguments(int argc, char** argv, Arguments& args, const OptionHandler& more) {
    std::vector<std::string> operands;
    for (int i = 1; i < argc; ++i) {
        const std::string word = argv[i];
        if (word == "-h" || word == "--help") {
            args.help = true;
            return true;
        }
        if (word.rfind("--", 0) != 0) {
            operands.push_back(word);
            continue;
        }
        if (i + 1 >= argc) return false;
        const char* value = argv[++i];
        if (word == "--sigma")
            args.sigma = std::stod(value);
        else if (word == "--raw")
            parse_size(value, args.raw_height, args.raw_width, args.raw_channels);
        else if (!more || !more(word, value))
            return false;
    }
    if (operands.size() != 3) return false;
    args.model = operands[0];
    args.input = operands[1];
    args.output = operands[2];
    return true;
}

}  // namespace rfr
