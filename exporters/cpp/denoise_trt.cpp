// rfr_denoise_trt: run a TensorRT engine written by rfr-deploy (exporters/tensorrt_engine.py) on one image.
//
//   rfr_denoise_trt MODEL.engine INPUT OUTPUT [--sigma S] [--raw HxWxC]
//
// The engine's sidecar (MODEL.engine.json) must sit next to it: the program refuses an engine built
// with another TensorRT version or for another GPU, a weight-stripped engine, and an engine whose bytes do
// not match the sidecar's sha256, as the Python loader does. INPUT/OUTPUT: 8-bit
// binary .pgm/.ppm, or raw float32 H x W x C (size from --raw). Written against the TensorRT 10/11
// C++ API: IRuntime::deserializeCudaEngine, ICudaEngine::createExecutionContext,
// IExecutionContext::setInputShape / setTensorAddress / enqueueV3, and the CUDA runtime for buffers.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "command_line.h"
#include "image_io.h"
#include "sidecar_check.h"

namespace {

class Logger : public nvinfer1::ILogger {
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
    }
};

void check_cuda(cudaError_t status, const char* what) {
    if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open");
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Refuse an engine that its sidecar does not describe as runnable here: another TensorRT version (headers and
// library), a weight-stripped plan, plan bytes whose sha256 differs, or another GPU.
void check_sidecar(const std::string& sidecar, const std::string& plan) {
    std::ostringstream here;
    here << NV_TENSORRT_MAJOR << "." << NV_TENSORRT_MINOR << "." << NV_TENSORRT_PATCH;
    rfr::check_plan(sidecar, plan, here.str());
    // getInferLibVersion() is extern "C" at global scope (NvInferRuntimeBase.h), not in namespace nvinfer1.
    if (::getInferLibVersion() != NV_TENSORRT_VERSION)
        throw std::runtime_error("the TensorRT library does not match the headers this program was built with");
    int device = 0;
    cudaDeviceProp prop{};
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    const std::string capability = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    const std::string gpu = rfr::json_string(sidecar, "gpu_name");
    if (gpu != prop.name || rfr::json_string(sidecar, "compute_capability") != capability)
        throw std::runtime_error("engine was built for " + gpu + ", this GPU is " + prop.name +
                                 ": rebuild the engine here");
}

struct DeviceBuffer {
    void* ptr = nullptr;
    explicit DeviceBuffer(size_t bytes) { check_cuda(cudaMalloc(&ptr, bytes), "cudaMalloc"); }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

int usage(std::ostream& out, int status) {
    out << "usage: rfr_denoise_trt MODEL.engine INPUT OUTPUT [--sigma S] [--raw HxWxC]\n";
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    rfr::Arguments args;
    try {
        if (!rfr::parse_arguments(argc, argv, args)) return usage(std::cerr, 2);
        if (args.help) return usage(std::cout, 0);
        const std::string &engine_path = args.model, &input_path = args.input, &output_path = args.output;
        const std::string sidecar = read_file(engine_path + ".json");
        const std::string plan = read_file(engine_path);
        check_sidecar(sidecar, plan);

        Logger logger;
        std::unique_ptr<nvinfer1::IRuntime> runtime{nvinfer1::createInferRuntime(logger)};
        std::unique_ptr<nvinfer1::ICudaEngine> engine{runtime->deserializeCudaEngine(plan.data(), plan.size())};
        if (!engine) throw std::runtime_error(engine_path + ": TensorRT could not deserialize the engine");
        std::unique_ptr<nvinfer1::IExecutionContext> context{engine->createExecutionContext()};
        if (!context) throw std::runtime_error("could not create an execution context");
        bool noise_map = false;
        for (int i = 0; i < engine->getNbIOTensors(); ++i)
            noise_map = noise_map || std::string(engine->getIOTensorName(i)) == "sigma";
        if (engine->getTensorDataType("noisy") != nvinfer1::DataType::kFLOAT ||
            engine->getTensorDataType("denoised") != nvinfer1::DataType::kFLOAT)
            throw std::runtime_error("expected float32 'noisy' and 'denoised' tensors (rfr-deploy engines have them)");

        const rfr::Image image = rfr::read_image(input_path, args.raw_height, args.raw_width, args.raw_channels);
        const int64_t channels = engine->getTensorShape("noisy").d[1];  // fixed at export: C of N×C×H×W
        if (channels > 0 && image.channels != channels) {
            std::cerr << "error: the engine takes " << channels << "-channel images, " << input_path << " has "
                      << image.channels << "\n";
            return 2;
        }
        // An image too small for the graph's reflect padding runs edge-padded, as in Python.
        const std::string multiple = rfr::json_string(sidecar, "model.pad_multiple");
        const rfr::Image run = rfr::pad_for_graph(image, multiple.empty() ? 1 : std::stoi(multiple));
        const std::vector<float> planar = rfr::to_planar(run);
        const size_t bytes = planar.size() * sizeof(float);

        if (!context->setInputShape("noisy", nvinfer1::Dims4{1, run.channels, run.height, run.width}))
            throw std::runtime_error("image size is outside the engine's optimisation profile (see the sidecar)");
        cudaStream_t stream = nullptr;
        check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
        DeviceBuffer input(bytes), output(bytes), sigma_buffer(sizeof(float));
        check_cuda(cudaMemcpyAsync(input.ptr, planar.data(), bytes, cudaMemcpyHostToDevice, stream), "copy in");
        if (!context->setTensorAddress("noisy", input.ptr) || !context->setTensorAddress("denoised", output.ptr))
            throw std::runtime_error("TensorRT refused the I/O buffers");
        float sigma_value = 0.0f;
        if (noise_map) {
            if (args.sigma < 0) {
                const std::string stored = rfr::json_string(sidecar, "sigma");
                if (stored.empty()) throw std::runtime_error("this engine takes a noise level: pass --sigma S");
                args.sigma = std::stod(stored) * 255.0;
            }
            sigma_value = static_cast<float>(args.sigma / 255.0);
            nvinfer1::Dims one{};
            one.nbDims = 1;
            one.d[0] = 1;
            if (!context->setInputShape("sigma", one)) throw std::runtime_error("TensorRT refused the sigma shape");
            check_cuda(cudaMemcpyAsync(sigma_buffer.ptr, &sigma_value, sizeof(float), cudaMemcpyHostToDevice, stream),
                       "copy sigma");
            if (!context->setTensorAddress("sigma", sigma_buffer.ptr))
                throw std::runtime_error("TensorRT refused the sigma buffer");
        }
        if (!context->enqueueV3(stream)) throw std::runtime_error("TensorRT failed to enqueue the engine");
        std::vector<float> result(planar.size());
        check_cuda(cudaMemcpyAsync(result.data(), output.ptr, bytes, cudaMemcpyDeviceToHost, stream), "copy out");
        check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        cudaStreamDestroy(stream);
        const rfr::Image denoised = rfr::from_planar(result, run.height, run.width, run.channels);
        rfr::write_image(output_path, rfr::crop(denoised, image.height, image.width));
        std::cerr << input_path << " -> " << output_path << "\n";
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
