// Image files for the rfr-deploy C++ samples: 8-bit binary PGM/PPM and raw float32.
//
// Pixels travel as float32 in [0, 1], interleaved H x W x C (C = 1 or 3), like the
// Python library's arrays. Raw float32 files hold exactly those values, little endian,
// with no header; their size is given on the command line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rfr {

struct Image {
    int height = 0;
    int width = 0;
    int channels = 0;
    std::vector<float> pixels;  // H x W x C, interleaved
};

// Reads a binary PGM (P5, gray) or PPM (P6, RGB) file with maxval 255. Throws std::runtime_error.
Image read_pnm(const std::string& path);

// Writes 8-bit P5/P6, rounding and clipping to [0, 255]. Throws std::runtime_error.
void write_pnm(const std::string& path, const Image& image);

// Reads H x W x C float32 values. Throws std::runtime_error when the file size differs.
Image read_raw(const std::string& path, int height, int width, int channels);

void write_raw(const std::string& path, const Image& image);

// Reads an image by suffix: .pgm/.ppm/.pnm as PNM, anything else as raw float32 of the given size.
Image read_image(const std::string& path, int raw_height, int raw_width, int raw_channels);
void write_image(const std::string& path, const Image& image);

// H x W x C interleaved <-> C x H x W planar (the networks' NCHW layout with N = 1).
std::vector<float> to_planar(const Image& image);
Image from_planar(const std::vector<float>& planar, int height, int width, int channels);

// The image edge-padded at the bottom and right to a multiple of `multiple` where it is too small for the
// exported graph's reflect padding (a side no longer than the padding it needs), as the Python library pads
// it before the graph runs; any other image as it is (the graph pads it). Crop the result back with crop().
Image pad_for_graph(const Image& image, int multiple);

// The top-left height x width of `image`.
Image crop(const Image& image, int height, int width);

// Parses "HxWxC" (e.g. 512x768x3). Throws std::runtime_error.
void parse_size(const std::string& text, int& height, int& width, int& channels);

}  // namespace rfr
