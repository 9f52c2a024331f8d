#include "command_line.h"

#include "image_io.h"

namespace rfr {

bool parse_arguments(int argc, char** argv, Arguments& args, const OptionHandler& more) {
    if (argc < 4) return false;
    args.model = argv[1];
    args.input = argv[2];
    args.output = argv[3];
    for (int i = 4; i < argc; ++i) {
        const std::string option = argv[i];
        if (i + 1 >= argc) return false;
        const char* value = argv[++i];
        if (option == "--sigma")
            args.sigma = std::stod(value);
        else if (option == "--raw")
            parse_size(value, args.raw_height, args.raw_width, args.raw_channels);
        else if (!more || !more(option, value))
            return false;
    }
    return true;
}

}  // namespace rfr
