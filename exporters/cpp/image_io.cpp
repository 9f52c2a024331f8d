#include "image_io.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>

namespace rfr {
namespace {

bool has_suffix(const std::string& s, const std::string& suffix) {
    if (s.size() < suffix.size()) return false;
    std::string tail = s.substr(s.size() - suffix.size());
    std::transform(tail.begin(), tail.end(), tail.begin(), [](unsigned char c) { return std::tolower(c); });
    return tail == suffix;
}

bool is_pnm(const std::string& path) {
    return has_suffix(path, ".pgm") || has_suffix(path, ".ppm") || has_suffix(path, ".pnm");
}

// Next header token, skipping whitespace and '#' comments.
std::string next_token(std::istream& in) {
    std::string token;
    int c;
    while ((c = in.get()) != EOF) {
        if (c == '#') {
            while ((c = in.get()) != EOF && c != '\n') {
            }
        } else if (std::isspace(c)) {
            if (!token.empty()) return token;
        } else {
            token.push_back(static_cast<char>(c));
        }
    }
    return token;
}

int parse_positive(const std::string& token, const std::string& path) {
    try {
        size_t used = 0;
        int value = std::stoi(token, &used);
        if (used == token.size() && value > 0) return value;
    } catch (const std::exception&) {
    }
    throw std::runtime_error(path + ": invalid PNM header field '" + token + "'");
}

// Writes `path` under the name `path.part`, renamed into place once `fill` has written it; a failed write
// removes the part file.
void write_atomically(const std::string& path, const std::function<void(std::ofstream&)>& fill) {
    const std::string tmp = path + ".part";
    {
        std::ofstream out(tmp, std::ios::binary);
        if (!out) throw std::runtime_error(tmp + ": cannot create");
        fill(out);
        if (!out) {
            out.close();
            std::remove(tmp.c_str());
            throw std::runtime_error(tmp + ": write failed");
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error(path + ": cannot rename into place");
}

}  // namespace

Image read_pnm(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open");
    const std::string magic = next_token(in);
    if (magic != "P5" && magic != "P6")
        throw std::runtime_error(path + ": not a binary PGM (P5) or PPM (P6) file");
    Image image;
    image.channels = magic == "P5" ? 1 : 3;
    image.width = parse_positive(next_token(in), path);
    image.height = parse_positive(next_token(in), path);
    if (parse_positive(next_token(in), path) != 255)
        throw std::runtime_error(path + ": only 8-bit PNM files (maxval 255) are supported");
    // next_token consumed exactly one whitespace byte after maxval, as the format requires.
    const size_t count = static_cast<size_t>(image.height) * image.width * image.channels;
    std::vector<unsigned char> bytes(count);
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(count));
    if (static_cast<size_t>(in.gcount()) != count) throw std::runtime_error(path + ": pixel data is truncated");
    image.pixels.resize(count);
    for (size_t i = 0; i < count; ++i) image.pixels[i] = bytes[i] / 255.0f;
    return image;
}

void write_pnm(const std::string& path, const Image& image) {
    if (image.channels != 1 && image.channels != 3)
        throw std::runtime_error(path + ": PNM output needs 1 or 3 channels");
    std::vector<unsigned char> bytes(image.pixels.size());
    for (size_t i = 0; i < bytes.size(); ++i) {
        const float v = std::round(image.pixels[i] * 255.0f);
        bytes[i] = static_cast<unsigned char>(std::clamp(v, 0.0f, 255.0f));
    }
    write_atomically(path, [&](std::ofstream& out) {
        out << (image.channels == 1 ? "P5" : "P6") << "\n" << image.width << " " << image.height << "\n255\n";
        out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    });
}

Image read_raw(const std::string& path, int height, int width, int channels) {
    if (height <= 0 || width <= 0 || (channels != 1 && channels != 3))
        throw std::runtime_error(path + ": not a .pgm/.ppm/.pnm image; other inputs are raw float32, sized by --raw "
                                        "HxWxC with C = 1 or 3 (convert PNG or JPEG to PPM first)");
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) throw std::runtime_error(path + ": cannot open");
    Image image{height, width, channels, {}};
    const size_t count = static_cast<size_t>(height) * width * channels;
    if (static_cast<size_t>(in.tellg()) != count * sizeof(float))
        throw std::runtime_error(path + ": size does not match " + std::to_string(height) + "x" +
                                 std::to_string(width) + "x" + std::to_string(channels) + " float32 values");
    in.seekg(0);
    image.pixels.resize(count);
    in.read(reinterpret_cast<char*>(image.pixels.data()), static_cast<std::streamsize>(count * sizeof(float)));
    return image;
}

void write_raw(const std::string& path, const Image& image) {
    write_atomically(path, [&](std::ofstream& out) {
        out.write(reinterpret_cast<const char*>(image.pixels.data()),
                  static_cast<std::streamsize>(image.pixels.size() * sizeof(float)));
    });
}

Image read_image(const std::string& path, int raw_height, int raw_width, int raw_channels) {
    return is_pnm(path) ? read_pnm(path) : read_raw(path, raw_height, raw_width, raw_channels);
}

void write_image(const std::string& path, const Image& image) {
    if (is_pnm(path))
        write_pnm(path, image);
    else
        write_raw(path, image);
}

std::vector<float> to_planar(const Image& image) {
    const size_t plane = static_cast<size_t>(image.height) * image.width;
    std::vector<float> planar(plane * image.channels);
    for (size_t p = 0; p < plane; ++p)
        for (int c = 0; c < image.channels; ++c) planar[c * plane + p] = image.pixels[p * image.channels + c];
    return planar;
}

Image from_planar(const std::vector<float>& planar, int height, int width, int channels) {
    Image image{height, width, channels, std::vector<float>(planar.size())};
    const size_t plane = static_cast<size_t>(height) * width;
    for (size_t p = 0; p < plane; ++p)
        for (int c = 0; c < channels; ++c) image.pixels[p * channels + c] = planar[c * plane + p];
    return image;
}

Image pad_for_graph(const Image& image, int multiple) {
    if (multiple <= 1) return image;
    const int pad_h = (multiple - image.height % multiple) % multiple;
    const int pad_w = (multiple - image.width % multiple) % multiple;
    if (std::min(image.height, image.width) > std::max(pad_h, pad_w)) return image;  // the graph reflects
    Image padded{image.height + pad_h, image.width + pad_w, image.channels, {}};
    padded.pixels.resize(static_cast<size_t>(padded.height) * padded.width * padded.channels);
    for (int y = 0; y < padded.height; ++y)
        for (int x = 0; x < padded.width; ++x) {
            const size_t from = (static_cast<size_t>(std::min(y, image.height - 1)) * image.width +
                                 std::min(x, image.width - 1)) * image.channels;
            const size_t to = (static_cast<size_t>(y) * padded.width + x) * padded.channels;
            std::copy_n(image.pixels.begin() + from, image.channels, padded.pixels.begin() + to);
        }
    return padded;
}

Image crop(const Image& image, int height, int width) {
    if (height == image.height && width == image.width) return image;
    Image out{height, width, image.channels, {}};
    const size_t row = static_cast<size_t>(width) * image.channels;
    out.pixels.resize(row * height);
    for (int y = 0; y < height; ++y)
        std::copy_n(image.pixels.begin() + static_cast<size_t>(y) * image.width * image.channels, row,
                    out.pixels.begin() + y * row);
    return out;
}

void parse_size(const std::string& text, int& height, int& width, int& channels) {
    char x1 = 0, x2 = 0;
    std::istringstream in(text);
    if (!(in >> height >> x1 >> width >> x2 >> channels) || x1 != 'x' || x2 != 'x' || height <= 0 || width <= 0)
        throw std::runtime_error("expected HxWxC (e.g. 512x768x3), got '" + text + "'");
}

}  // namespace rfr
