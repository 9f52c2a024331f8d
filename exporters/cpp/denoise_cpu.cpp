// rfr_denoise_cpu: run a denoiser exported by rfr-deploy (TorchScript, exporters/torchscript_export.py)
// on the CPU with libtorch, the C++ library inside the `torch` pip wheel.
//
//   rfr_denoise_cpu MODEL.pt INPUT OUTPUT [--sigma S] [--raw HxWxC] [--threads N]
//
// INPUT/OUTPUT: 8-bit binary .pgm/.ppm, or raw float32 H x W x C (size from --raw; the output of a
// raw input is raw too). --sigma: noise level in grey levels for noise-map networks (default: the
// level stored at export).
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <unordered_map>

#include "command_line.h"
#include "image_io.h"

namespace {

std::unordered_map<std::string, std::string> parse_key_values(const std::string& text) {
    std::unordered_map<std::string, std::string> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        const auto eq = line.find('=');
        if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return out;
}

int usage(std::ostream& out, int status) {
    out << "usage: rfr_denoise_cpu MODEL.pt INPUT OUTPUT [--sigma S] [--raw HxWxC] [--threads N]\n";
    return status;
}

bool set_threads(const std::string& option, const char* value) {
    if (option != "--threads") return false;
    at::set_num_threads(std::stoi(value));
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    rfr::Arguments args;
    try {
        if (!rfr::parse_arguments(argc, argv, args, set_threads)) return usage(std::cerr, 2);
        if (args.help) return usage(std::cout, 0);
        const std::string &model_path = args.model, &input_path = args.input, &output_path = args.output;

        // The module carries its settings as an extra file (channels, noise_map, sigma = sigma/255, pad_multiple).
        torch::jit::ExtraFilesMap extra{{"rfr_deploy.txt", ""}};
        torch::jit::Module module = torch::jit::load(model_path, torch::kCPU, extra);
        module.eval();
        const auto settings = parse_key_values(extra["rfr_deploy.txt"]);
        const bool noise_map = settings.count("noise_map") && settings.at("noise_map") == "1";
        const int channels = settings.count("channels") ? std::stoi(settings.at("channels")) : 0;

        const rfr::Image image = rfr::read_image(input_path, args.raw_height, args.raw_width, args.raw_channels);
        if (channels && image.channels != channels) {
            std::cerr << "error: the model takes " << channels << "-channel images, " << input_path << " has "
                      << image.channels << "\n";
            return 2;
        }
        // An image too small for the graph's reflect padding runs edge-padded, as in Python.
        const int multiple = settings.count("pad_multiple") ? std::stoi(settings.at("pad_multiple")) : 1;
        const rfr::Image run = rfr::pad_for_graph(image, multiple);
        std::vector<float> planar = rfr::to_planar(run);
        torch::Tensor noisy =
            torch::from_blob(planar.data(), {1, run.channels, run.height, run.width}, torch::kFloat32);

        std::vector<torch::jit::IValue> inputs{noisy};
        if (noise_map) {
            double level = args.sigma;
            if (level < 0 && settings.count("sigma") && !settings.at("sigma").empty())
                level = std::stod(settings.at("sigma")) * 255.0;
            if (level < 0) {
                std::cerr << "error: this model takes a noise level: pass --sigma S (grey levels)\n";
                return 2;
            }
            inputs.emplace_back(torch::full({1}, level / 255.0, torch::kFloat32));
        }

        c10::InferenceMode guard;
        torch::Tensor out = module.forward(inputs).toTensor().contiguous().to(torch::kFloat32);
        std::vector<float> result(out.data_ptr<float>(), out.data_ptr<float>() + out.numel());
        const rfr::Image denoised = rfr::from_planar(result, run.height, run.width, run.channels);
        rfr::write_image(output_path, rfr::crop(denoised, image.height, image.width));
        std::cerr << input_path << " -> " << output_path << " (" << image.width << "x" << image.height << ")\n";
    } catch (const std::exception& e) {
        std::string what = e.what();
        std::cerr << "error: " << what.substr(0, what.find('\n')) << "\n";
        return 1;
    }
    return 0;
}
