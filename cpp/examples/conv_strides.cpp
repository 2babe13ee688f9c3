// conv_strides DIR: a worked example of consuming an fxlower artifact from C++.
//
// For every node (in every graph) lowered from torch.nn.Conv2d, print its stride attribute and a checksum of
// its weight: the sum of the elements as double, read in place from the memory-mapped weights file.
//
//   $ conv_strides model.fxl
//   conv: stride (2, 2), weight F32 [4, 3, 3, 3], sum -3.375
#include <fxlower/fxlower.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  const char* help =
      "usage: conv_strides DIR\n"
      "\n"
      "For every node lowered from torch.nn.Conv2d in the fxlower artifact DIR, prints its stride and the sum of\n"
      "its weight's elements (as double, read in place from the mapped weights file). No options but -h/--help.\n"
      "exit status: 0 done (\"no torch.nn.Conv2d node\" when there is none), 1 the artifact is invalid, 2 usage\n";
  if (argc == 2 && (std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help")) {
    std::fputs(help, stdout);
    return 0;
  }
  if (argc != 2) {
    std::fputs(help, stderr);
    return 2;
  }
  try {
    const fxlower::Artifact artifact = fxlower::load(argv[1]);
    int found = 0;
    for (const fxlower::Graph& graph : artifact.graphs()) {
      for (const fxlower::Node& node : graph.nodes) {
        if (!node.lowering || node.lowering->module_type != "torch.nn.Conv2d") continue;
        ++found;
        const fxlower::Lowering& conv = *node.lowering;
        // Attributes are Values: stride is a tuple of ints, weight a reference to the tensor table.
        const std::vector<std::int64_t> stride = conv.attr_at("stride").int_list(2);
        const fxlower::Tensor& weight = artifact.tensor_at(conv.attr_at("weight").tensor_name());
        double sum = 0;
        for (std::size_t i = 0; i < static_cast<std::size_t>(weight.numel()); ++i) sum += weight.element_double(i);
        std::string shape;
        for (std::int64_t d : weight.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
        std::printf("%s%s: stride (%lld, %lld), weight %s [%s], sum %s\n",
                    graph.name.empty() ? "" : (graph.name + ".").c_str(), node.name.c_str(),
                    static_cast<long long>(stride.at(0)), static_cast<long long>(stride.at(1)),
                    std::string(fxlower::dtype_name(weight.dtype)).c_str(), shape.c_str(),
                    fxlower::python_float_repr(sum).c_str());
      }
    }
    if (!found) std::printf("no torch.nn.Conv2d node\n");
    return 0;
  } catch (const fxlower::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
